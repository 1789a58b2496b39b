//! What the sidecar makes of its flags before it starts: the refusals (a flag rapr cannot honour
//! stops the start with a message, never silently does nothing), the deprecated aliases folded
//! into their successors, and the listen addresses of each server.
//!
//! Kept apart from flags.rs so the flag list stays a list; every rule here names the daprd code
//! it follows (cmd/daprd/options, pkg/runtime/config.go, pkg/api/http/server.go at v1.18.3).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::flags::{FlagError, SidecarArgs};

/// A warning for the log, found while checking the flags.
pub type Warning = String;

impl SidecarArgs {
    /// Checks the flags and folds deprecated aliases in; returns warnings to log. An `Err` stops
    /// the start: the flag asks for something rapr does not do.
    pub fn validate(&mut self) -> Result<Vec<Warning>, FlagError> {
        let mut warnings = Vec::new();
        match self.mode.as_str() {
            "standalone" => {}
            "kubernetes" => {
                return Err(FlagError::Refused {
                    flag: "mode",
                    value: self.mode.clone(),
                    reason: "rapr runs in standalone mode only: kubernetes mode needs the Dapr operator, sentry and the injector, which rapr does not have",
                })
            }
            _ => return Err(FlagError::Refused { flag: "mode", value: self.mode.clone(), reason: "unknown mode; use standalone" }),
        }
        if self.enable_mtls {
            return Err(FlagError::Refused {
                flag: "enable-mtls",
                value: "true".into(),
                reason: "mTLS between sidecars needs a sentry certificate authority, which rapr does not have yet; start without --enable-mtls",
            });
        }
        if self.enable_profiling {
            return Err(FlagError::Refused {
                flag: "enable-profiling",
                value: "true".into(),
                reason: "daprd serves Go's pprof here, which a Rust sidecar cannot; profile rapr with perf or a heap profiler instead",
            });
        }
        // pkg/runtime/config.go: --app-ssl turns http into https and grpc into grpcs.
        if self.app_ssl {
            let p = self.app_protocol.to_ascii_lowercase();
            match p.as_str() {
                "http" | "" => self.app_protocol = "https".into(),
                "grpc" => self.app_protocol = "grpcs".into(),
                _ => {}
            }
            warnings.push(format!("the 'app-ssl' flag is deprecated; use 'app-protocol={}' instead", self.app_protocol));
        }
        if self.dapr_http_max_request_size.is_some() {
            warnings.push("--dapr-http-max-request-size is deprecated; use --max-body-size".into());
        }
        if self.dapr_http_read_buffer_size.is_some() {
            warnings.push("--dapr-http-read-buffer-size is deprecated; use --read-buffer-size".into());
        }
        if self.components_path.is_some() {
            warnings.push("--components-path is deprecated; use --resources-path".into());
        }
        if let Some(a) = &self.scheduler_host_address {
            warnings.push(format!("--scheduler-host-address {a}: rapr's sidecar has no jobs or reminders client yet, so the scheduler is not contacted"));
        }
        if let Some(a) = &self.sentry_address {
            warnings.push(format!("--sentry-address {a}: not contacted, mTLS is off (rapr has no sentry client yet)"));
        }
        if self.unix_domain_socket.is_some() && self.app_id.is_empty() {
            return Err(FlagError::Refused { flag: "unix-domain-socket", value: self.uds_dir_text(), reason: "the socket names carry the app id: give --app-id" });
        }
        self.max_body_bytes()?;
        self.read_buffer_bytes()?;
        self.block_shutdown()?;
        self.daprd.validate(&mut warnings)?;
        Ok(warnings)
    }

    fn uds_dir_text(&self) -> String {
        self.unix_domain_socket.as_ref().map(|p| p.display().to_string()).unwrap_or_default()
    }

    /// `--dapr-block-shutdown-duration`, when given.
    pub fn block_shutdown(&self) -> Result<Option<Duration>, FlagError> {
        let Some(v) = &self.dapr_block_shutdown_duration else { return Ok(None) };
        super::duration::parse_std(v, super::duration::BareInteger::Rejected)
            .map(|d| Some(d.unwrap_or_default()))
            .map_err(|e| FlagError::Size { flag: "dapr-block-shutdown-duration", value: v.clone(), reason: e.to_string() })
    }

    /// The HTTP and gRPC API sockets of `--unix-domain-socket` (daprd's names).
    pub fn api_sockets(&self) -> Option<(PathBuf, PathBuf)> {
        let dir = self.unix_domain_socket.as_ref()?;
        Some((dir.join(format!("dapr-{}-http.socket", self.app_id)), dir.join(format!("dapr-{}-grpc.socket", self.app_id))))
    }

    /// Where the sidecar-to-sidecar server listens: `--dapr-internal-grpc-listen-address`
    /// (empty: all interfaces, as Go's `:port`), never `--dapr-listen-addresses`.
    pub fn internal_addr(&self) -> Result<SocketAddr, FlagError> {
        one_addr(&self.dapr_internal_grpc_listen_address, self.dapr_internal_grpc_port, "dapr-internal-grpc-listen-address")
    }

    /// Where `/metrics` listens: `--metrics-listen-address` (default `0.0.0.0`).
    pub fn metrics_addr(&self) -> Result<SocketAddr, FlagError> {
        one_addr(&self.metrics_listen_address, self.metrics_port, "metrics-listen-address")
    }

    /// Where the public health/metadata server listens, when `--dapr-public-port` is given.
    pub fn public_addr(&self) -> Result<Option<SocketAddr>, FlagError> {
        self.dapr_public_port.map(|p| one_addr(&self.dapr_public_listen_address, p, "dapr-public-listen-address")).transpose()
    }

    /// The host other sidecars reach this one at, when the internal listen address says it
    /// (daprd: a loopback internal listen address replaces the host address).
    pub fn internal_host_override(&self) -> Option<String> {
        let a = self.dapr_internal_grpc_listen_address.as_str();
        matches!(a, "127.0.0.1" | "localhost" | "[::1]").then(|| a.to_string())
    }
}

/// One listen address (an IP, `localhost`, or empty for all interfaces) with its port.
fn one_addr(addr: &str, port: u16, flag: &'static str) -> Result<SocketAddr, FlagError> {
    let a = addr.trim();
    let ip: IpAddr = match a {
        "" | "0.0.0.0" => IpAddr::from([0, 0, 0, 0]),
        "localhost" => IpAddr::from([127, 0, 0, 1]),
        other => other
            .trim_matches(|c| c == '[' || c == ']')
            .parse()
            .map_err(|_| FlagError::Size { flag, value: addr.to_string(), reason: "not an IP address".into() })?,
    };
    Ok(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        f: SidecarArgs,
    }

    fn flags(args: &[&str]) -> SidecarArgs {
        Cli::try_parse_from(std::iter::once("rapr").chain(args.iter().copied())).unwrap().f
    }

    #[test]
    fn refusals_name_the_flag_and_why() {
        for (args, needle) in [
            (&["--mode", "kubernetes"][..], "--mode kubernetes: rapr runs in standalone mode only"),
            (&["--enable-mtls"][..], "--enable-mtls true: mTLS between sidecars needs a sentry"),
            (&["--enable-profiling", "true"][..], "--enable-profiling true: daprd serves Go's pprof"),
            (&["--unix-domain-socket", "/tmp"][..], "give --app-id"),
            (&["--dapr-block-shutdown-duration", "10"][..], "dapr-block-shutdown-duration"),
        ] {
            let e = flags(args).validate().unwrap_err().to_string();
            assert!(e.contains(needle), "{args:?}: {e}");
        }
        assert!(flags(&["--mode", "standalone", "--enable-mtls", "false"]).validate().is_ok());
    }

    #[test]
    fn max_body_size_wins_over_the_deprecated_flag_as_daprd() {
        assert_eq!(flags(&[]).max_body_bytes().unwrap(), 4 << 20);
        assert_eq!(flags(&["--dapr-http-max-request-size", "8"]).max_body_bytes().unwrap(), 8 << 20);
        assert_eq!(flags(&["--dapr-http-max-request-size", "8", "--max-body-size", "1Mi"]).max_body_bytes().unwrap(), 1 << 20);
        assert_eq!(flags(&["--dapr-http-max-request-size", "-1"]).max_body_bytes().unwrap(), 4 << 20);
        assert_eq!(flags(&[]).read_buffer_bytes().unwrap(), 4 << 10);
        assert_eq!(flags(&["--dapr-http-read-buffer-size", "16"]).read_buffer_bytes().unwrap(), 16 << 10);
        assert_eq!(flags(&["--dapr-http-read-buffer-size", "16", "--read-buffer-size", "8Ki"]).read_buffer_bytes().unwrap(), 8 << 10);
    }

    #[test]
    fn app_ssl_upgrades_the_protocol() {
        let mut f = flags(&["--app-ssl", "--app-protocol", "grpc"]);
        assert_eq!(f.validate().unwrap().len(), 1);
        assert_eq!(f.app_protocol, "grpcs");
        let mut f = flags(&["--app-ssl"]);
        f.validate().unwrap();
        assert_eq!(f.app_protocol, "https");
    }

    #[test]
    fn lists_repeat_and_split_on_commas() {
        let f = flags(&["--resources-path", "a,b", "--resources-path", "c", "--config", "x.yaml", "--config", "y.yaml,z.yaml"]);
        assert_eq!(f.resource_paths(), ["a", "b", "c"].map(PathBuf::from));
        assert_eq!(f.config, ["x.yaml", "y.yaml", "z.yaml"].map(PathBuf::from));
    }

    #[test]
    fn servers_listen_on_their_own_addresses() {
        let f = flags(&["--dapr-listen-addresses", "127.0.0.1", "--metrics-port", "9999", "--dapr-internal-grpc-port", "5000"]);
        assert_eq!(f.metrics_addr().unwrap(), "0.0.0.0:9999".parse().unwrap());
        assert_eq!(f.internal_addr().unwrap(), "0.0.0.0:5000".parse().unwrap());
        assert_eq!(f.public_addr().unwrap(), None);
        let f = flags(&["--metrics-listen-address", "127.0.0.1", "--dapr-internal-grpc-listen-address", "localhost", "--dapr-public-port", "3501", "--dapr-public-listen-address", "::1"]);
        assert_eq!(f.metrics_addr().unwrap().ip().to_string(), "127.0.0.1");
        assert_eq!(f.internal_host_override().as_deref(), Some("localhost"));
        assert_eq!(f.public_addr().unwrap(), Some("[::1]:3501".parse().unwrap()));
        assert!(flags(&["--metrics-listen-address", "nope"]).metrics_addr().is_err());
    }

    #[test]
    fn block_shutdown_is_a_go_duration() {
        assert_eq!(flags(&[]).block_shutdown().unwrap(), None);
        assert_eq!(flags(&["--dapr-block-shutdown-duration", "1m30s"]).block_shutdown().unwrap(), Some(Duration::from_secs(90)));
    }
}
