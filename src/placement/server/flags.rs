//! `rapr placement`'s flags: daprd placement's names and defaults (cmd/placement/options), with
//! rapr's lease settings added. Values daprd refuses (keepalives outside 1-10 s) are refused the
//! same way, before anything starts.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::duration::flag_duration as go_duration;

/// The longest a sidecar takes to find a new leader and renew through it: daprd's largest
/// reconnect pause (750 ms) and a dial.
pub const RECONNECT_MS: u64 = 1_000;


/// Flags of `rapr placement` (and the placement part of `rapr control-plane`).
#[derive(Debug, Clone, clap::Args)]
pub struct PlacementArgs {
    /// This node's id; it must be one of `--initial-cluster`'s.
    #[arg(long = "id", default_value = "dapr-placement-0")]
    pub id: String,
    /// The cluster's nodes, `id=host:port,...` (the node-to-node addresses).
    #[arg(long = "initial-cluster", default_value = "dapr-placement-0=127.0.0.1:8201")]
    pub initial_cluster: String,
    /// The gRPC port sidecars connect to (`--placement-port` under `rapr control-plane`).
    #[arg(long = "port", visible_alias = "placement-port", default_value_t = 50005)]
    pub port: u16,
    /// The address the gRPC and metrics servers listen on (empty: every interface).
    #[arg(long = "listen-address", default_value = "")]
    pub listen_address: String,
    /// The health (and metadata) HTTP port.
    #[arg(long = "healthz-port", default_value_t = 8080)]
    pub healthz_port: u16,
    /// The health server's listen address (empty: every interface).
    #[arg(long = "healthz-listen-address", default_value = "")]
    pub healthz_listen_address: String,
    /// The Prometheus metrics port.
    #[arg(long = "metrics-port", default_value_t = 9090)]
    pub metrics_port: u16,
    /// Serve metrics.
    #[arg(long = "enable-metrics", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub enable_metrics: bool,
    /// Virtual nodes per host on each actor type's ring.
    #[arg(long = "replicationFactor", default_value_t = 100)]
    pub replication_factor: i64,
    /// How often the server pings a quiet sidecar connection (1s to 10s).
    #[arg(long = "keepalive-time", default_value = "2s", value_parser = go_duration)]
    pub keepalive_time: Duration,
    /// How long a ping may go unanswered before the connection is closed (1s to 10s).
    #[arg(long = "keepalive-timeout", default_value = "3s", value_parser = go_duration)]
    pub keepalive_timeout: Duration,
    /// How long a dissemination round may take before late sidecars are closed.
    #[arg(long = "disseminate-timeout", default_value = "8s", value_parser = go_duration)]
    pub disseminate_timeout: Duration,
    /// daprd's coalescing of rounds; only 0 (off, daprd's default) is supported.
    #[arg(long = "disseminate-coalesce-window", default_value = "0s", value_parser = go_duration)]
    pub disseminate_coalesce_window: Duration,
    /// The data directory (raft log and snapshots); in memory when absent, as daprd.
    #[arg(long = "raft-logstore-path")]
    pub raft_logstore_path: Option<PathBuf>,
    /// Serve the tables as JSON at `/placement/state` on the health port.
    #[arg(long = "metadata-enabled", env = "DAPR_PLACEMENT_METADATA_ENABLED", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub metadata_enabled: bool,
    /// mTLS between sidecars and placement (refused until rapr has sentry).
    #[arg(long = "tls-enabled", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub tls_enabled: bool,
    /// Run mode (`standalone`).
    #[arg(long = "mode", default_value = "standalone")]
    pub mode: String,
    /// How long a host whose stream closed keeps its actors (rapr; 0: they move at once, as daprd).
    #[arg(long = "lease-period", default_value = "5s", value_parser = go_duration)]
    pub lease_period: Duration,
    /// The shared secret of the control-plane nodes' sessions (the same on every node).
    #[arg(long = "cluster-cookie", env = "RAPR_CLUSTER_COOKIE", default_value = "rapr-control-plane", hide_env_values = true)]
    pub cluster_cookie: String,
    /// Log level: debug, info, warn, error.
    #[arg(long = "log-level", default_value = "info")]
    pub log_level: String,
    /// Log as JSON lines.
    #[arg(long = "log-as-json", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub log_as_json: bool,
}

/// One node of `--initial-cluster`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub id: String,
    pub address: String,
}

impl PlacementArgs {
    /// What daprd refuses at start, refused the same way, and what rapr does not do yet.
    pub fn validate(&self) -> Result<Vec<Peer>, String> {
        let range = Duration::from_secs(1)..=Duration::from_secs(10);
        if !range.contains(&self.keepalive_time) {
            return Err(format!("invalid value for keepalive-time: {:?} (must be between 1s and 10s)", self.keepalive_time));
        }
        if !range.contains(&self.keepalive_timeout) {
            return Err(format!("invalid value for keepalive-timeout: {:?} (must be between 1s and 10s)", self.keepalive_timeout));
        }
        if self.disseminate_timeout.is_zero() {
            return Err("--disseminate-timeout must be positive".into());
        }
        if self.replication_factor <= 0 {
            return Err(format!("--replicationFactor must be positive, got {}", self.replication_factor));
        }
        if !self.disseminate_coalesce_window.is_zero() {
            return Err("--disseminate-coalesce-window is not supported by rapr yet (only 0s, daprd's default)".into());
        }
        if self.tls_enabled {
            return Err("--tls-enabled needs sentry, which rapr does not have yet".into());
        }
        if self.mode != "standalone" {
            return Err(format!("--mode {} is not supported (rapr runs standalone)", self.mode));
        }
        let peers = parse_peers(&self.initial_cluster)?;
        if !peers.iter().any(|p| p.id == self.id) {
            return Err(format!("--id {} is not one of --initial-cluster's nodes ({})", self.id, self.initial_cluster));
        }
        if peers.len() > 1 && !self.lease_period.is_zero() {
            // In a cluster, a leader change must not fence the hosts (a lone node never changes).
            let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
            let timing = crate::placement::leases::LeaseTiming {
                period_ms: ms(self.lease_period),
                margin_ms: ms(crate::placement::client::process::lease_margin(self.lease_period)),
                election_ms: crate::placement::raft::node::ELECTION_WORST_MS,
                reconnect_ms: RECONNECT_MS,
            };
            timing.check().map_err(|e| format!("--lease-period: {e}"))?;
        }
        Ok(peers)
    }
}

/// `id=host:port,...`, each id once.
pub fn parse_peers(s: &str) -> Result<Vec<Peer>, String> {
    let mut peers: Vec<Peer> = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((id, address)) = part.split_once('=') else {
            return Err(format!("--initial-cluster entry {part:?} is not id=host:port"));
        };
        let valid_addr = address.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if id.is_empty() || !valid_addr {
            return Err(format!("--initial-cluster entry {part:?} is not id=host:port"));
        }
        if peers.iter().any(|p| p.id == id) {
            return Err(format!("--initial-cluster names node {id} twice"));
        }
        peers.push(Peer { id: id.to_string(), address: address.to_string() });
    }
    if peers.is_empty() {
        return Err("--initial-cluster is empty".into());
    }
    Ok(peers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct W {
        #[command(flatten)]
        a: PlacementArgs,
    }

    fn args(extra: &[&str]) -> PlacementArgs {
        W::parse_from(std::iter::once("rapr").chain(extra.iter().copied())).a
    }

    #[test]
    fn defaults_are_daprds() {
        let a = args(&[]);
        assert_eq!((a.port, a.healthz_port, a.metrics_port, a.replication_factor), (50005, 8080, 9090, 100));
        assert_eq!((a.keepalive_time, a.keepalive_timeout), (Duration::from_secs(2), Duration::from_secs(3)));
        assert_eq!(a.disseminate_timeout, Duration::from_secs(8));
        assert_eq!(a.validate().unwrap(), [Peer { id: "dapr-placement-0".into(), address: "127.0.0.1:8201".into() }]);
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(args(&["--keepalive-time", "11s"]).validate().unwrap_err().contains("keepalive-time"));
        assert!(args(&["--keepalive-timeout", "500ms"]).validate().unwrap_err().contains("keepalive-timeout"));
        assert!(args(&["--id", "other"]).validate().unwrap_err().contains("not one of"));
        assert!(args(&["--replicationFactor", "0"]).validate().is_err());
        assert!(args(&["--disseminate-coalesce-window", "100ms"]).validate().is_err());
        assert!(parse_peers("a=h:1,a=h:2").unwrap_err().contains("twice"));
        assert!(parse_peers("a").is_err());
        let cluster = ["--id", "a", "--initial-cluster", "a=h:1,b=h:2,c=h:3"];
        assert!(args(&cluster).validate().is_ok(), "the default lease outlasts an election and a reconnect");
        let short = args(&[&cluster[..], &["--lease-period", "2s"]].concat()).validate().unwrap_err();
        assert!(short.contains("--lease-period"), "{short}");
        assert!(args(&["--lease-period", "1s"]).validate().is_ok(), "a lone node has no leader change to ride through");
        assert!(parse_peers("a=h").is_err());
        assert!(W::try_parse_from(["rapr", "--keepalive-time", "2"]).is_err(), "a Go duration needs its unit");
    }
}
