//! Service invocation between real sidecars: HTTP `/v1.0/invoke`, the `dapr-app-id` fallback and
//! its basic-auth form, gRPC `InvokeService`, self-invocation, streaming of large bodies, and the
//! errors for unknown or dead targets and targets without an app.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Request};
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::any;
use axum::Router;
use base64::Engine;
use serde_json::{json, Value};

use crate::harness::{eventually, Sidecar, SidecarBuilder};

/// An app that describes what it received; `/status/{code}` answers that status.
async fn echo_app() -> u16 {
    async fn echo(req: Request) -> impl IntoResponse {
        let (parts, body) = req.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        // A repeated header's values joined with `|`, so a test sees every one in order.
        let headers: serde_json::Map<String, Value> = parts
            .headers
            .keys()
            .map(|k| {
                let values: Vec<&str> = parts.headers.get_all(k).iter().map(|v| v.to_str().unwrap_or("")).collect();
                (k.as_str().to_string(), Value::String(values.join("|")))
            })
            .collect();
        let out = json!({
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "query": parts.uri.query(),
            "headers": headers,
            "len": body.len(),
            "body": String::from_utf8_lossy(&body[..body.len().min(64)]),
        });
        (StatusCode::OK, [("x-app", "echo")], axum::Json(out))
    }
    async fn status(Path(code): Path<u16>) -> impl IntoResponse {
        (StatusCode::from_u16(code).unwrap(), [("content-type", "text/plain")], format!("status {code}"))
    }
    async fn big(req: Request) -> impl IntoResponse {
        let body: Bytes = axum::body::to_bytes(req.into_body(), usize::MAX).await.unwrap();
        body
    }
    let app = Router::new().route("/status/{code}", any(status)).route("/big", any(big)).fallback(echo);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    port
}

struct Pair {
    caller: Sidecar,
    target: Sidecar,
    _home: tempfile::TempDir,
}

async fn pair(target_id: &str) -> Pair {
    let home = tempfile::tempdir().unwrap();
    let port = echo_app().await;
    let target = SidecarBuilder::new(target_id).home(home.path()).args(&["--app-port", &port.to_string()]).start().await;
    let caller = SidecarBuilder::new(&format!("{target_id}-caller")).home(home.path()).start().await;
    Pair { caller, target, _home: home }
}

#[tokio::test]
async fn http_invoke_passes_verb_path_query_headers_body_and_status() {
    let p = pair("inv-target").await;
    for verb in [Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
        let r = p
            .caller
            .client
            .request(verb.clone(), p.caller.url("/v1.0/invoke/inv-target/method/orders/42?x=1&y=two"))
            .header("x-custom", "c1")
            .header("x-multi", "m2")
            .header("x-multi", "m1")
            .header("content-type", "text/plain")
            .header("connection", "keep-alive")
            .header("dapr-caller-app-id", "spoofed")
            .body("hello")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{verb}");
        assert_eq!(r.headers()["x-app"], "echo", "response headers pass back");
        let seen: Value = r.json().await.unwrap();
        assert_eq!(seen["method"], verb.as_str());
        assert_eq!(seen["path"], "/orders/42");
        assert_eq!(seen["query"], "x=1&y=two");
        assert_eq!(seen["headers"]["x-custom"], "c1");
        assert_eq!(seen["headers"]["x-multi"], "m2|m1", "every value of a repeated header, in order (daprd adds each)");
        assert_eq!(seen["headers"]["content-type"], "text/plain");
        assert_eq!(seen["headers"]["dapr-caller-app-id"], "inv-target-caller", "the sidecar sets the caller, never the app");
        assert_eq!(seen["headers"]["dapr-callee-app-id"], "inv-target");
        assert!(seen["headers"].get("dapr-api-token").is_none());
        if verb != Method::GET {
            assert_eq!(seen["body"], "hello");
        }
    }
    // The app's status, content type and body come back as they are.
    let r = p.caller.client.get(p.caller.url("/v1.0/invoke/inv-target/method/status/418")).send().await.unwrap();
    assert_eq!(r.status(), 418);
    assert_eq!(r.headers()["content-type"], "text/plain");
    assert_eq!(r.text().await.unwrap(), "status 418");
}

#[tokio::test]
async fn dapr_app_id_header_and_basic_auth_route_any_path() {
    let p = pair("inv-header").await;
    let r = p.caller.client.post(p.caller.url("/some/path?q=1")).header("dapr-app-id", "inv-header").body("x").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let seen: Value = r.json().await.unwrap();
    assert_eq!((seen["path"].as_str(), seen["query"].as_str()), (Some("/some/path"), Some("q=1")));
    assert!(seen["headers"].get("dapr-app-id").is_none(), "dapr-app-id is consumed by the sidecar");
    let auth = base64::engine::general_purpose::STANDARD.encode("dapr-app-id:inv-header");
    let r = p.caller.client.get(p.caller.url("/basic")).header("authorization", format!("Basic {auth}")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["path"], "/basic");
    // No app id anywhere: daprd's 404.
    let r = p.caller.client.get(p.caller.url("/nowhere")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["errorCode"], "ERR_DIRECT_INVOKE");
    assert_eq!(b["message"], "failed getting app id either from the URL path or the header dapr-app-id");
}

#[tokio::test]
async fn large_bodies_stream_both_ways() {
    let p = pair("inv-big").await;
    let body: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let r = p.caller.client.post(p.caller.url("/v1.0/invoke/inv-big/method/big")).body(body.clone()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), body.as_slice());
    // Over the limit: daprd has no 413; its limit reader fails the call (`stream too large`), so
    // with a declared length and with a chunked body alike.
    let too_big = vec![b'x'; 4 * 1024 * 1024 + 1];
    let chunks: Vec<Result<hyper::body::Frame<Bytes>, std::io::Error>> = too_big.chunks(256 * 1024).map(|c| Ok(hyper::body::Frame::data(Bytes::copy_from_slice(c)))).collect();
    let chunked = reqwest::Body::wrap(http_body_util::StreamBody::new(futures::stream::iter(chunks)));
    for body in [reqwest::Body::from(too_big.clone()), chunked] {
        let r = p.caller.client.post(p.caller.url("/v1.0/invoke/inv-big/method/big")).body(body).send().await.unwrap();
        assert_eq!(r.status(), 500);
        let b: Value = r.json().await.unwrap();
        assert_eq!(b["errorCode"], "ERR_DIRECT_INVOKE");
        assert_eq!(b["message"], "failed to invoke, id: inv-big, err: stream too large");
    }
}

#[tokio::test]
async fn method_names_are_decoded_cleaned_and_checked_as_daprd() {
    let p = pair("inv-method").await;
    let path_seen = |r: reqwest::Response| async move {
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.unwrap()["path"].as_str().unwrap().to_string()
    };
    let get = |path: &str| p.caller.client.get(p.caller.url(path)).send();
    assert_eq!(path_seen(get("/v1.0/invoke/inv-method/method/a/..%2Fb%20c").await.unwrap()).await, "/b%20c");
    assert_eq!(path_seen(get("/v1.0/invoke/inv-method/method/..%2F..%2Fadmin").await.unwrap()).await, "/admin", "leading ../ stripped");
    assert_eq!(path_seen(get("/v1.0/invoke/inv-method/method/x//y/").await.unwrap()).await, "/x/y");
    let via_header = p.caller.client.get(p.caller.url("/q/..%2Fr")).header("dapr-app-id", "inv-method").send().await.unwrap();
    assert_eq!(path_seen(via_header).await, "/r");
    for (path, quoted) in [("a%3Fb", r#"method contains forbidden character: "a?b""#), ("a%23b", r#"method contains forbidden character: "a#b""#), ("a%0Ab", r#"method contains control character at position 1: "a\nb""#)] {
        let r = get(&format!("/v1.0/invoke/inv-method/method/{path}")).await.unwrap();
        assert_eq!(r.status(), 500, "{path}");
        let b: Value = r.json().await.unwrap();
        assert_eq!(b["errorCode"], "ERR_DIRECT_INVOKE");
        assert_eq!(b["message"], format!("failed to invoke, id: inv-method, err: rpc error: code = InvalidArgument desc = invalid method: {quoted}"));
    }
    // gRPC InvokeService: the same check, INTERNAL as daprd's ErrDirectInvoke.
    let mut c = p.caller.grpc().await;
    let req = rapr_proto::runtime::v1::InvokeServiceRequest {
        id: "inv-method".into(),
        message: Some(rapr_proto::common::v1::InvokeRequest { method: "a\0b".into(), ..Default::default() }),
    };
    let st = c.invoke_service(req).await.unwrap_err();
    assert_eq!(st.code(), tonic::Code::Internal);
    assert_eq!(st.message(), r#"failed to invoke, id: inv-method, err: rpc error: code = InvalidArgument desc = invalid method: method contains forbidden character: "a\x00b""#);
}

#[tokio::test]
async fn grpc_invoke_service_to_an_http_app() {
    use rapr_proto::common::v1::{http_extension::Verb, HttpExtension, InvokeRequest};
    use rapr_proto::runtime::v1::InvokeServiceRequest;
    let p = pair("inv-grpc").await;
    let mut c = p.caller.grpc().await;
    let req = |method: &str, verb: Verb| InvokeServiceRequest {
        id: "inv-grpc".into(),
        message: Some(InvokeRequest {
            method: method.into(),
            data: Some(prost_types::Any { type_url: String::new(), value: b"payload".to_vec() }),
            content_type: "text/plain".into(),
            http_extension: Some(HttpExtension { verb: verb as i32, querystring: "a=b".into() }),
        }),
    };
    let resp = c.invoke_service(req("echo", Verb::Put)).await.unwrap();
    assert_eq!(resp.metadata().get("dapr-http-status").unwrap(), "200");
    assert_eq!(resp.metadata().get("x-app").unwrap(), "echo", "the app's response headers come back");
    assert_eq!(resp.metadata().get("dapr-content-type").unwrap(), "application/json", "an HTTP app's permanent headers get dapr- (daprd)");
    let resp = resp.into_inner();
    assert_eq!(resp.content_type, "application/json");
    let seen: Value = serde_json::from_slice(&resp.data.unwrap().value).unwrap();
    assert_eq!((seen["method"].as_str(), seen["path"].as_str(), seen["query"].as_str(), seen["body"].as_str()), (Some("PUT"), Some("/echo"), Some("a=b"), Some("payload")));
    assert_eq!(seen["headers"]["dapr-caller-app-id"], "inv-grpc-caller");
    // Non-2xx app answers are errors with daprd's code mapping and ErrorInfo.
    use tonic_types::StatusExt;
    for (code, grpc) in [(404, tonic::Code::NotFound), (400, tonic::Code::Internal), (500, tonic::Code::Unknown), (503, tonic::Code::Unavailable)] {
        let st = c.invoke_service(req(&format!("status/{code}"), Verb::Get)).await.unwrap_err();
        assert_eq!(st.code(), grpc, "{code}");
        assert_eq!(st.metadata().get("dapr-http-status").unwrap(), code.to_string().as_str(), "daprd sets it on failures too");
        assert_eq!(st.metadata().get("dapr-content-type").unwrap(), "text/plain");
        let info = st.get_details_error_info().unwrap();
        assert_eq!(info.metadata["http.code"], code.to_string());
        assert_eq!(info.metadata["http.error_message"], format!("status {code}"));
    }
    // Unknown target.
    let mut bad = req("echo", Verb::Get);
    bad.id = "nobody-home".into();
    let st = c.invoke_service(bad).await.unwrap_err();
    assert_eq!(st.code(), tonic::Code::Internal);
    assert_eq!(st.message(), "failed to invoke, id: nobody-home, err: no host found with the given ID");
}

#[tokio::test]
async fn self_invocation_and_targets_without_an_app() {
    let p = pair("inv-self").await;
    let r = p.target.client.get(p.target.url("/v1.0/invoke/inv-self/method/me")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["headers"]["dapr-caller-app-id"], "inv-self");
    // The caller sidecar has no app: invoking it fails with daprd's error.
    let r = p.target.client.get(p.target.url("/v1.0/invoke/inv-self-caller/method/x")).send().await.unwrap();
    assert_eq!(r.status(), 500);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["errorCode"], "ERR_DIRECT_INVOKE");
    assert!(b["message"].as_str().unwrap().contains("app channel not initialized"), "{b}");
    let r = p.caller.client.get(p.caller.url("/v1.0/invoke/unknown-app/method/x")).send().await.unwrap();
    assert_eq!(r.status(), 500);
    assert_eq!(r.json::<Value>().await.unwrap()["message"], "failed to invoke, id: unknown-app, err: no host found with the given ID");
    let r = p.caller.client.get(p.caller.url("/v1.0/invoke/a.b.c/method/x")).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["message"], "failed to invoke, id: a.b.c, err: invalid app id a.b.c");
}

#[tokio::test]
async fn a_dead_target_gives_errors_then_drops_out_of_name_resolution() {
    let Pair { caller, target, _home } = pair("inv-dead").await;
    let url = caller.url("/v1.0/invoke/inv-dead/method/x");
    assert_eq!(caller.client.get(&url).send().await.unwrap().status(), 200);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(target.pid() as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    drop(target);
    let r = caller.client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 500);
    assert_eq!(r.json::<Value>().await.unwrap()["errorCode"], "ERR_DIRECT_INVOKE");
    eventually(Duration::from_secs(15), "the dead sidecar to drop out", || async {
        let b: Value = caller.client.get(&url).send().await.ok()?.json().await.ok()?;
        b["message"].as_str().unwrap_or_default().ends_with("no host found with the given ID").then_some(())
    })
    .await;
}

#[tokio::test]
async fn external_services_by_http_endpoint_name_and_by_full_url() {
    let port = echo_app().await;
    let endpoint = format!(
        "apiVersion: dapr.io/v1alpha1\nkind: HTTPEndpoint\nmetadata:\n  name: billing\nspec:\n  baseUrl: http://127.0.0.1:{port}/api\n  headers:\n  - name: x-api-key\n    value: k123\n"
    );
    let bad = "apiVersion: dapr.io/v1alpha1\nkind: HTTPEndpoint\nmetadata:\n  name: bad\nspec:\n  baseUrl: ftp://nowhere\n";
    let sc = SidecarBuilder::new("ext-caller").file("endpoint.yaml", &endpoint).file("bad.yaml", bad).allow_unhealthy().start().await;
    let r = sc.client.post(sc.url("/v1.0/invoke/billing/method/invoices/7?paid=1")).header("content-type", "text/plain").body("hi").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let seen: Value = r.json().await.unwrap();
    assert_eq!(seen["path"], "/api/invoices/7", "the method is appended to the base URL");
    assert_eq!(seen["query"], "paid=1");
    assert_eq!(seen["headers"]["x-api-key"], "k123", "the endpoint's headers are added");
    assert_eq!(seen["headers"]["dapr-caller-app-id"], "ext-caller");
    assert_eq!(seen["body"], "hi");
    // A full URL as the app id (URL-encoded in the path, as clients send it).
    let url = format!("/v1.0/invoke/http%3A%2F%2F127.0.0.1%3A{port}/method/direct/path");
    let r = sc.client.get(sc.url(&url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["path"], "/direct/path");
    // A broken HTTPEndpoint is reported like any bad resource, naming it.
    let m: Value = sc.client.get(sc.url("/v1.0/metadata")).send().await.unwrap().json().await.unwrap();
    let bad = m["extended"]["rapr.component.bad"].as_str().unwrap();
    assert!(bad.contains("baseUrl"), "{bad}");
    assert_eq!(m["httpEndpoints"], serde_json::json!([{"name": "billing"}]), "loaded endpoints are listed");
    // An unreachable external service: daprd's invoke error.
    let r = sc.client.get(sc.url("/v1.0/invoke/http%3A%2F%2F127.0.0.1%3A1/method/x")).send().await.unwrap();
    assert_eq!(r.status(), 500);
    assert_eq!(r.json::<Value>().await.unwrap()["errorCode"], "ERR_DIRECT_INVOKE");
}
