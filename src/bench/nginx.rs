//! The nginx baseline of `rapr bench`: two nginx hops with keep-alive upstreams in front of the
//! echo app, the same shape as two sidecars (client -> hop 1 -> hop 2 -> app). HTTP/1.1 proxying
//! for `invoke-http`, `grpc_pass` over HTTP/2 for `invoke-grpc`. nginx comes from Debian's
//! packages and is installed when missing (as root); each hop is one process with a generated
//! config in the run's temporary folder.

use std::path::{Path, PathBuf};

use super::procs::{Pinning, Proc};

/// Finds nginx, installing Debian's `nginx-light` if it is missing and we are root.
pub fn ensure_installed() -> Result<PathBuf, String> {
    super::debian::ensure("nginx-light", &["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"])
}

/// The two-hop chain in front of 127.0.0.1:`app`: (hop 1, hop 2, hop 1's port).
pub async fn chain(nginx: &Path, ctx: &super::Ctx, name: &str, app: u16, grpc: bool) -> Result<(Proc, Proc, u16), String> {
    super::procs::retry_in_use(|| async {
        let [n1, n2] = super::procs::free_ports()?;
        let mut hop2 = hop(nginx, &ctx.pin, &ctx.dir, &format!("{name}-nginx2"), n2, app, grpc)?;
        let mut hop1 = hop(nginx, &ctx.pin, &ctx.dir, &format!("{name}-nginx1"), n1, n2, grpc)?;
        super::procs::wait_port(&mut hop2, n2, std::time::Duration::from_secs(10)).await?;
        super::procs::wait_port(&mut hop1, n1, std::time::Duration::from_secs(10)).await?;
        Ok((hop1, hop2, n1))
    })
    .await
}

/// One hop: listens on `listen`, forwards to 127.0.0.1:`upstream`.
pub fn hop(nginx: &Path, pin: &Pinning, dir: &Path, name: &str, listen: u16, upstream: u16, grpc: bool) -> Result<Proc, String> {
    let prefix = dir.join(name);
    std::fs::create_dir_all(&prefix).map_err(|e| format!("{}: {e}", prefix.display()))?;
    let conf = prefix.join("nginx.conf");
    std::fs::write(&conf, config(&prefix, listen, upstream, grpc)).map_err(|e| format!("{}: {e}", conf.display()))?;
    let mut cmd = pin.command(nginx);
    cmd.arg("-p").arg(&prefix).arg("-c").arg(&conf).arg("-e").arg(prefix.join("error.log"));
    Proc::spawn(name, cmd, dir)
}

/// The generated configuration: one process, no logging, keep-alive both ways.
fn config(prefix: &Path, listen: u16, upstream: u16, grpc: bool) -> String {
    let p = prefix.display();
    let (listen_opts, forward) = if grpc {
        (" http2", "grpc_pass grpc://next;".to_string())
    } else {
        ("", "proxy_pass http://next;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";".to_string())
    };
    format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {p}/nginx.pid;\nerror_log {p}/error.log warn;\n\
         events {{ worker_connections 16384; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {p}/body;\n  proxy_temp_path {p}/proxy;\n  fastcgi_temp_path {p}/fastcgi;\n  uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n\
         \x20 keepalive_requests 100000000;\n  keepalive_timeout 300s;\n\
         \x20 upstream next {{\n    server 127.0.0.1:{upstream};\n    keepalive 256;\n    keepalive_requests 100000000;\n  }}\n\
         \x20 server {{\n    listen 127.0.0.1:{listen}{listen_opts};\n    location / {{\n      {forward}\n    }}\n  }}\n}}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_forward_with_keep_alive() {
        let http = config(Path::new("/tmp/x"), 8001, 8002, false);
        assert!(http.contains("listen 127.0.0.1:8001;") && http.contains("server 127.0.0.1:8002;"));
        assert!(http.contains("proxy_http_version 1.1;") && http.contains("keepalive 256;"));
        let grpc = config(Path::new("/tmp/x"), 8001, 8002, true);
        assert!(grpc.contains("listen 127.0.0.1:8001 http2;") && grpc.contains("grpc_pass grpc://next;"));
    }
}
