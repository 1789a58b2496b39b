//! Service invocation under resiliency, layered as daprd layers it (pkg/api/http
//! directmessaging.go, pkg/api/grpc InvokeService, pkg/messaging direct_messaging.go):
//!
//! ```text
//! endpoint policy (targets.apps.<id> or the App defaults; breaker per "<id>:<method>")
//!   └─ attempt: this sidecar's app      -> the app channel, once
//!               another app, targeted   -> resolve + call, once
//!               another app, untargeted -> DaprBuiltInServiceRetries: resolve + call, retried
//!                                          on UNAVAILABLE / UNAUTHENTICATED only
//! ```
//! - The endpoint policy applies to calls to this sidecar's own app too (daprd's API layer
//!   takes it before knowing the target is local); the built-in retries never do (daprd's
//!   `invokeLocal`).
//! - The built-in retries apply only when `targets.apps` does not name the app (daprd's
//!   `PolicyDefined`; an App default policy does not count) and the body can be replayed. There
//!   are no other connection retries, so a user policy is never multiplied by hidden ones.
//! - A request whose body streams (no known length) is not buffered: it gets one attempt, its
//!   transport errors are not retried, and a failing answer passes through, as daprd's.
//! - An external target (an `HTTPEndpoint` by name, or a full URL as the id) takes its endpoint
//!   policy the same way, with daprd's keys: `<name>:<baseUrl>` (one breaker per endpoint) and
//!   `<url>/<method>`; never the built-in retries (daprd's `invokeHTTPEndpoint` has none).
//! - Each built-in attempt resolves the name again (daprd drops its resolver cache entry on
//!   such a failure), so a restarted target on another port is found within the retries.

use std::sync::atomic::{AtomicU32, Ordering};

use axum::body::Body;
use http::Response;
use rapr_proto::internals::v1 as internals;

use super::InvokeApi;
use crate::invoke::internal::InternalService;
use crate::invoke::message::CallMeta;
use crate::invoke::InvokeError;
use crate::resiliency::{AttemptError, BuiltIn, Policy, PolicyError};

/// Why one attempt of a policy-governed call failed.
enum Failure<R> {
    /// The call never got an answer from the app.
    Invoke(InvokeError),
    /// The app answered with a failure status; the answer is kept to pass it through verbatim.
    Answer(R),
}

/// daprd's endpoint key: the id as the caller wrote it, `:`, the method.
pub fn endpoint_key(id: &str, method: &str) -> String {
    format!("{id}:{method}")
}

/// Where an HTTP-semantics call goes.
pub(super) enum Dest<'a> {
    /// An app id (this sidecar's own app, or another app's sidecar).
    App(&'a str),
    /// An external service: an `HTTPEndpoint` (its name) or a URL given as the id.
    External { endpoint: Option<&'a str>, base: &'a str, extra: &'a [(String, String)] },
}

impl InvokeApi {
    /// The endpoint policy of a call to `id` (as written) for `method`.
    pub(super) fn endpoint_policy(&self, id: &str, method: &str) -> Policy {
        self.resiliency.for_endpoint(id, &endpoint_key(id, method))
    }

    /// Whether calls to `target` (a parsed id) get daprd's built-in service retries.
    fn built_in_retries(&self, target: &str) -> bool {
        target != &*self.app_id && !self.resiliency.has_app_target(target)
    }

    /// An HTTP-semantics call to `dest` under its policies (see the module header).
    pub(super) async fn http_call(&self, policy: Policy, dest: Dest<'_>, meta: CallMeta, body: Body) -> Result<Response<Body>, InvokeError> {
        use axum::body::HttpBody as _;
        let streaming = body.size_hint().exact().is_none();
        let built_in = match dest {
            Dest::App(target) => !streaming && self.built_in_retries(target),
            Dest::External { .. } => false,
        };
        let dest = &dest;
        if policy.is_noop() && !built_in {
            return self.http_once(dest, &meta, body).await;
        }
        let retries_status = |code: u16| policy.retry().is_none_or(|r| r.matching.retries_http_status(code));
        let (replay, mut once) = if streaming { (None, Some(body)) } else { (Some(crate::invoke::remote::collect(body).await?), None) };
        let result = policy
            .run(|| {
                let body = replay.clone().map(Body::from).or_else(|| once.take());
                let (meta, retries_status, replay) = (&meta, &retries_status, &replay);
                async move {
                    let body = body.ok_or_else(|| AttemptError::Permanent(Failure::Invoke(InvokeError::Unreachable("the request body was already sent".into()))))?;
                    let answer = match (replay, dest) {
                        (Some(bytes), Dest::App(target)) if built_in => self.remote_with_built_in(target, |addr| {
                            let (req, body) = (meta.to_internal(), Body::from(bytes.clone()));
                            async move { self.remote.call_stream(&addr, req, body).await }
                        })
                        .await,
                        _ => self.http_once(dest, meta, body).await,
                    };
                    match answer {
                        Ok(resp) if (200..400).contains(&resp.status().as_u16()) => Ok(resp),
                        Ok(resp) if !streaming && retries_status(resp.status().as_u16()) => Err(AttemptError::Retriable(Failure::Answer(resp))),
                        // A streamed request's failing answer is passed through, never retried.
                        Ok(resp) if streaming => Ok(resp),
                        Ok(resp) => Err(AttemptError::Permanent(Failure::Answer(resp))),
                        Err(e) if streaming => Err(AttemptError::Permanent(Failure::Invoke(e))),
                        Err(e) => Err(AttemptError::Retriable(Failure::Invoke(e))),
                    }
                }
            })
            .await;
        match result {
            Ok(resp) => Ok(resp),
            // The app's own failure answer passes through verbatim, as daprd does.
            Err(PolicyError::Operation(Failure::Answer(resp))) => Ok(resp),
            Err(PolicyError::Operation(Failure::Invoke(e))) => Err(e),
            Err(other) => Err(InvokeError::Unreachable(other.map_operation(|_| String::new()).to_string())),
        }
    }

    /// One HTTP-semantics attempt: this sidecar's app, another app's sidecar, or an external
    /// service.
    async fn http_once(&self, dest: &Dest<'_>, meta: &CallMeta, body: Body) -> Result<Response<Body>, InvokeError> {
        let target = match dest {
            Dest::App(target) => *target,
            Dest::External { endpoint, base, extra } => return self.external.call(*endpoint, base, extra, meta, body).await,
        };
        if target == &*self.app_id {
            let app = self.app.as_ref().ok_or(InvokeError::NoAppChannel)?;
            return app.call_http(meta, body).await;
        }
        let addr = self.resolve(target).await?;
        self.remote.call_stream(&addr, meta.to_internal(), body).await
    }

    /// A whole-message call (gRPC `InvokeService`) to `target` under its policies.
    pub(super) async fn unary_call(&self, policy: Policy, target: &str, req: internals::InternalInvokeRequest) -> Result<internals::InternalInvokeResponse, InvokeError> {
        let built_in = self.built_in_retries(target);
        let result = policy
            .run(|| {
                let (req, policy) = (req.clone(), &policy);
                async move {
                    let answer = if target == &*self.app_id {
                        self.local_unary(req).await
                    } else if built_in {
                        self.remote_with_built_in(target, |addr| {
                            let req = req.clone();
                            async move { self.remote.call_unary(&addr, req).await }
                        })
                        .await
                    } else {
                        let addr = self.resolve(target).await.map_err(|e| AttemptError::Retriable(Failure::Invoke(e)))?;
                        self.remote.call_unary(&addr, req).await
                    };
                    let resp = answer.map_err(|e| match e {
                        InvokeError::NoAppChannel => AttemptError::Permanent(Failure::Invoke(e)),
                        e => AttemptError::Retriable(Failure::Invoke(e)),
                    })?;
                    let code = resp.status.as_ref().map(|s| s.code).unwrap_or(0);
                    let failed = if code >= 100 { !(200..400).contains(&code) } else { code != 0 };
                    if !failed || policy.is_noop() {
                        return Ok(resp);
                    }
                    let retriable = policy.retry().is_none_or(|r| if code >= 100 { r.matching.retries_http_status(code as u16) } else { r.matching.retries_grpc_code(code as u16) });
                    Err(if retriable { AttemptError::Retriable(Failure::Answer(resp)) } else { AttemptError::Permanent(Failure::Answer(resp)) })
                }
            })
            .await;
        match result {
            Ok(resp) | Err(PolicyError::Operation(Failure::Answer(resp))) => Ok(resp),
            Err(PolicyError::Operation(Failure::Invoke(e))) => Err(e),
            Err(other) => Err(InvokeError::Unreachable(other.map_operation(|_| String::new()).to_string())),
        }
    }

    /// This sidecar's app, as the internal port would call it.
    async fn local_unary(&self, req: internals::InternalInvokeRequest) -> Result<internals::InternalInvokeResponse, InvokeError> {
        use rapr_proto::internals::v1::service_invocation_server::ServiceInvocation;
        match InternalService::new(self.app.clone()).call_local(tonic::Request::new(req)).await {
            Ok(r) => Ok(r.into_inner()),
            Err(s) if s.code() == tonic::Code::FailedPrecondition => Err(InvokeError::NoAppChannel),
            Err(s) => Err(InvokeError::App(s.message().to_string())),
        }
    }

    /// `call` on `target`'s sidecar under `DaprBuiltInServiceRetries`: resolved again each
    /// attempt; only UNAVAILABLE / UNAUTHENTICATED (`InvokeError::Unavailable`) is retried, with
    /// daprd's message naming the retries made.
    async fn remote_with_built_in<T, F, Fut>(&self, target: &str, call: F) -> Result<T, InvokeError>
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = Result<T, InvokeError>>,
    {
        let attempts = AtomicU32::new(0);
        let (call, attempts) = (&call, &attempts);
        let result = self
            .resiliency
            .built_in(BuiltIn::ServiceRetries)
            .run(|| async move {
                let retries = attempts.fetch_add(1, Ordering::Relaxed);
                let addr = self.resolve(target).await.map_err(AttemptError::Permanent)?;
                match call(addr).await {
                    Ok(v) => Ok(v),
                    Err(InvokeError::Unavailable(e)) => {
                        tracing::debug!(target, retries, error = %e, "target unavailable; built-in service retries");
                        Err(AttemptError::Retriable(InvokeError::Unavailable(format!("failed to invoke target {target} after {retries} retries. Error: {e}"))))
                    }
                    Err(e) => Err(AttemptError::Permanent(e)),
                }
            })
            .await;
        result.map_err(|e| match e {
            PolicyError::Operation(e) => e,
            // A built-in policy has neither timeout nor breaker.
            other => InvokeError::Unreachable(other.to_string()),
        })
    }

    /// `target`'s sidecar address.
    async fn resolve(&self, target: &str) -> Result<String, InvokeError> {
        let resolver = self.resolver.as_ref().ok_or_else(|| InvokeError::Resolver("name resolution is not available".into()))?;
        resolver.resolve(target).await
    }
}
