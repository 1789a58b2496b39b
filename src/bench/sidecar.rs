//! Starting the measured `rapr sidecar` processes: free ports, a shared `RAPR_HOME` under the
//! run's scratch folder (so name resolution finds the sidecars of this run and no other), warn-level
//! logs, metrics on as by default, and readiness read from `/v1.0/healthz`.

use std::path::Path;
use std::time::Duration;

use super::procs::{free_ports, retry_in_use, wait_http_ok, Proc};
use super::Ctx;

/// A started sidecar.
pub struct Sidecar {
    /// The process.
    pub proc: Proc,
    /// HTTP API port.
    pub http: u16,
    /// gRPC API port.
    pub grpc: u16,
    /// Time from spawn to a 2xx `/v1.0/healthz`.
    pub startup: Duration,
}

impl Ctx {
    /// Starts `rapr sidecar --app-id app_id` with `resources` and `extra` flags, and waits until healthy.
    pub async fn sidecar(&self, app_id: &str, resources: &Path, extra: &[String]) -> Result<Sidecar, String> {
        std::fs::create_dir_all(resources).map_err(|e| format!("{}: {e}", resources.display()))?;
        retry_in_use(|| async {
            let [http, grpc, internal, metrics] = free_ports()?;
            let mut cmd = self.pin.command(&self.exe);
            cmd.args(["sidecar", "--app-id", app_id, "--log-level", "warn", "--dapr-listen-addresses", "127.0.0.1"])
                .args(["--dapr-http-port", &http.to_string(), "--dapr-grpc-port", &grpc.to_string()])
                .args(["--dapr-internal-grpc-port", &internal.to_string(), "--metrics-port", &metrics.to_string()])
                .arg("--resources-path")
                .arg(resources)
                .args(extra)
                .env("RAPR_HOME", self.dir.join("home"))
                .env_remove("RAPR_LOG");
            let started = std::time::Instant::now();
            let mut proc = Proc::spawn(app_id, cmd, &self.dir)?;
            wait_http_ok(&mut proc, http, "/v1.0/healthz", self.pin.startup_deadline(Duration::from_secs(30))).await?;
            Ok(Sidecar { proc, http, grpc, startup: started.elapsed() })
        })
        .await
    }
}
