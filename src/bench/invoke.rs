//! `invoke-http` and `invoke-grpc`: the echo app called directly (the baseline), through two
//! nginx hops (HTTP/1.1 passed through), through two haproxy hops (HTTP/2 between them, the
//! like-for-like peer of rapr), and through two rapr sidecars (caller sidecar -> internal gRPC ->
//! app's sidecar -> app). Added latency is each chain's percentile minus the direct one.
//!
//! HTTP: `POST /echo` to the app, nginx and haproxy, `POST /v1.0/invoke/bench-echo/method/echo`
//! to the sidecar. gRPC: `AppCallback.OnInvoke` to the app and through nginx (`grpc_pass`) and
//! haproxy (h2c), `Dapr.InvokeService` to the sidecar, which calls the app's `OnInvoke`.

use http::Method;

use super::callers::{self, HttpShape};
use super::{haproxy, nginx};
use super::procs::{free_ports, retry_in_use, wait_port, Proc};
use super::report::Row;
use super::{Ctx, Variant};

/// The app id of the echo app's sidecar.
pub const ECHO_ID: &str = "bench-echo";

/// The echo app on free ports (HTTP and gRPC).
pub async fn echo_app(ctx: &Ctx) -> Result<(Proc, u16, u16), String> {
    retry_in_use(|| async {
        let [http, grpc] = free_ports()?;
        let mut cmd = ctx.pin.command(&ctx.exe);
        cmd.args(["bench-echo", "--http-port", &http.to_string(), "--grpc-port", &grpc.to_string()]);
        let mut p = Proc::spawn("echo-app", cmd, &ctx.dir)?;
        let deadline = ctx.pin.startup_deadline(std::time::Duration::from_secs(10));
        wait_port(&mut p, http, deadline).await?;
        wait_port(&mut p, grpc, deadline).await?;
        Ok((p, http, grpc))
    })
    .await
}

/// Runs the scenario's rounds; returns a row per variant.
pub async fn run(ctx: &Ctx, grpc: bool) -> Result<Vec<Row>, String> {
    let scenario = if grpc { "invoke-grpc" } else { "invoke-http" };
    let nginx_bin = nginx::ensure_installed()?;
    let (echo, echo_http, echo_grpc) = echo_app(ctx).await?;
    let app_port = if grpc { echo_grpc } else { echo_http };
    let haproxy_bin = haproxy::ensure_installed()?;
    let (hop1, hop2, n1) = nginx::chain(&nginx_bin, ctx, scenario, app_port, grpc).await?;
    let (ha1, ha2, h1) = haproxy::chain(&haproxy_bin, ctx, scenario, app_port, grpc).await?;
    // rapr: caller sidecar -> app's sidecar -> app.
    let res = ctx.dir.join(format!("{scenario}-resources"));
    let protocol = if grpc { "grpc" } else { "http" };
    let target = ctx.sidecar(ECHO_ID, &res, &["--app-port".into(), app_port.to_string(), "--app-protocol".into(), protocol.into()]).await?;
    let caller = ctx.sidecar("bench-caller", &res, &[]).await?;
    let payload = ctx.payload();
    let shape = |path: &str| HttpShape { method: Method::POST, path: path.into(), body: payload.clone(), content_type: Some("application/json") };
    let variants = if grpc {
        vec![
            Variant::new("direct", callers::on_invoke(echo_grpc, payload.clone()), vec![&echo], "echo app"),
            Variant::new("nginx x2", callers::on_invoke(n1, payload.clone()), vec![&hop1, &hop2], "2 nginx"),
            Variant::new("haproxy x2", callers::on_invoke(h1, payload.clone()), vec![&ha1, &ha2], "2 haproxy"),
            Variant::new("rapr x2", callers::invoke_service(caller.grpc, ECHO_ID.into(), payload.clone()), vec![&caller.proc, &target.proc], "2 sidecars"),
        ]
    } else {
        vec![
            Variant::new("direct", callers::http(echo_http, shape("/echo")), vec![&echo], "echo app"),
            Variant::new("nginx x2", callers::http(n1, shape("/echo")), vec![&hop1, &hop2], "2 nginx"),
            Variant::new("haproxy x2", callers::http(h1, shape("/echo")), vec![&ha1, &ha2], "2 haproxy"),
            Variant::new("rapr x2", callers::http(caller.http, shape(&format!("/v1.0/invoke/{ECHO_ID}/method/echo"))), vec![&caller.proc, &target.proc], "2 sidecars"),
        ]
    };
    ctx.rounds(scenario, &variants).await
}
