//! The haproxy baseline of `rapr bench`: two haproxy hops in front of the echo app that carry the
//! call over HTTP/2 cleartext between them, as two rapr sidecars do (issue 13). nginx cannot
//! speak HTTP/2 to an upstream except through `grpc_pass`, so its chain passes HTTP/1.1 through and
//! translates nothing; this chain is the like-for-like peer of rapr's.
//!
//! `invoke-http`: client HTTP/1.1 -> hop 1 -> h2c -> hop 2 -> HTTP/1.1 -> app.
//! `invoke-grpc`: h2c on every leg.
//!
//! haproxy comes from Debian's packages (installed when missing, as root); each hop is one
//! foreground process (`-db`, one thread) with a generated config in the run's temporary folder.

use std::path::{Path, PathBuf};

use super::procs::{Pinning, Proc};

/// Finds haproxy, installing Debian's `haproxy` if it is missing and we are root.
pub fn ensure_installed() -> Result<PathBuf, String> {
    super::debian::ensure("haproxy", &["/usr/sbin/haproxy", "/usr/local/sbin/haproxy", "/usr/bin/haproxy"])
}

/// The protocols of one hop's two sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sides {
    /// The frontend takes HTTP/2 cleartext (prior knowledge) instead of HTTP/1.1.
    pub front_h2: bool,
    /// The backend speaks HTTP/2 cleartext to its server instead of HTTP/1.1.
    pub back_h2: bool,
}

/// (hop 1, hop 2) of the chain: HTTP/2 between the hops always; towards the client and the app
/// HTTP/1.1 for HTTP, HTTP/2 for gRPC.
pub fn chain_sides(grpc: bool) -> (Sides, Sides) {
    (Sides { front_h2: grpc, back_h2: true }, Sides { front_h2: true, back_h2: grpc })
}

/// The two-hop chain in front of 127.0.0.1:`app`: (hop 1, hop 2, hop 1's port).
pub async fn chain(haproxy: &Path, ctx: &super::Ctx, name: &str, app: u16, grpc: bool) -> Result<(Proc, Proc, u16), String> {
    let (s1, s2) = chain_sides(grpc);
    super::procs::retry_in_use(|| async {
        let [h1, h2] = super::procs::free_ports()?;
        let mut hop2 = hop(haproxy, &ctx.pin, &ctx.dir, &format!("{name}-haproxy2"), h2, app, s2)?;
        let mut hop1 = hop(haproxy, &ctx.pin, &ctx.dir, &format!("{name}-haproxy1"), h1, h2, s1)?;
        super::procs::wait_port(&mut hop2, h2, std::time::Duration::from_secs(10)).await?;
        super::procs::wait_port(&mut hop1, h1, std::time::Duration::from_secs(10)).await?;
        Ok((hop1, hop2, h1))
    })
    .await
}

/// One hop: listens on `listen`, forwards to 127.0.0.1:`upstream`.
pub fn hop(haproxy: &Path, pin: &Pinning, dir: &Path, name: &str, listen: u16, upstream: u16, sides: Sides) -> Result<Proc, String> {
    let conf = dir.join(format!("{name}.cfg"));
    std::fs::write(&conf, config(listen, upstream, sides)).map_err(|e| format!("{}: {e}", conf.display()))?;
    let mut cmd = pin.command(haproxy);
    // -db: foreground, no daemon and no master process, so the pid we measure is the worker.
    cmd.arg("-db").arg("-f").arg(&conf);
    Proc::spawn(name, cmd, dir)
}

/// The generated configuration: one thread, no `log` line (so no logging), keep-alive on both
/// sides with server connections shared between clients (`http-reuse always`, which also lets
/// one HTTP/2 connection carry every client's streams, as rapr's peer connection does), and
/// timeouts far beyond a round so no connection closes while measured.
pub fn config(listen: u16, upstream: u16, sides: Sides) -> String {
    let bind_proto = if sides.front_h2 { " proto h2" } else { "" };
    let server_proto = if sides.back_h2 { " proto h2" } else { "" };
    format!(
        "global\n    nbthread 1\n    maxconn 4096\n\n\
         defaults\n    mode http\n    option http-keep-alive\n    http-reuse always\n    timeout connect 10s\n    timeout client 600s\n    timeout server 600s\n    timeout http-request 600s\n    timeout http-keep-alive 600s\n\n\
         frontend hop\n    bind 127.0.0.1:{listen}{bind_proto}\n    default_backend next\n\n\
         backend next\n    server next 127.0.0.1:{upstream}{server_proto}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_chain_is_h1_in_h2_between_h1_to_the_app() {
        let (s1, s2) = chain_sides(false);
        let hop1 = config(8001, 8002, s1);
        assert!(hop1.contains("    bind 127.0.0.1:8001\n"), "{hop1}");
        assert!(hop1.contains("    server next 127.0.0.1:8002 proto h2\n"), "{hop1}");
        let hop2 = config(8002, 9000, s2);
        assert!(hop2.contains("    bind 127.0.0.1:8002 proto h2\n"), "{hop2}");
        assert!(hop2.contains("    server next 127.0.0.1:9000\n"), "{hop2}");
        for c in [&hop1, &hop2] {
            assert!(c.contains("nbthread 1") && c.contains("http-reuse always") && c.contains("option http-keep-alive"));
            assert!(!c.contains("\n    log "), "no logging: {c}");
        }
    }

    #[test]
    fn grpc_chain_is_h2_on_every_leg() {
        let (s1, s2) = chain_sides(true);
        for (c, listen, up) in [(config(8001, 8002, s1), 8001, 8002), (config(8002, 9000, s2), 8002, 9000)] {
            assert!(c.contains(&format!("bind 127.0.0.1:{listen} proto h2\n")), "{c}");
            assert!(c.contains(&format!("server next 127.0.0.1:{up} proto h2\n")), "{c}");
        }
    }

    /// haproxy itself accepts every generated config (`haproxy -c`), where it is installed
    /// (.ci/run installs it; rapr bench installs it on first use).
    #[test]
    fn haproxy_accepts_the_configs() {
        let Some(bin) = ["/usr/sbin/haproxy", "/usr/local/sbin/haproxy", "/usr/bin/haproxy"].iter().map(Path::new).find(|p| p.exists()) else {
            eprintln!("haproxy not installed: config check skipped");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        for grpc in [false, true] {
            let (s1, s2) = chain_sides(grpc);
            for sides in [s1, s2] {
                let path = dir.path().join("hop.cfg");
                std::fs::write(&path, config(18001, 18002, sides)).unwrap();
                let out = std::process::Command::new(bin).arg("-c").arg("-f").arg(&path).output().unwrap();
                let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
                assert!(out.status.success(), "{sides:?}: {text}");
                assert!(!text.contains("[WARNING]"), "{sides:?}: {text}");
            }
        }
    }
}
