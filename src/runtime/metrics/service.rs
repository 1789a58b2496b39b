//! Service invocation and component init metrics: daprd's `runtime/service_invocation/*` and
//! `runtime/component/*` views (pkg/diagnostics/service_monitoring.go).

use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::cache::Handle;
use super::{kind, ms, Buckets, Count, Hist, Labels, Metrics};

/// The service families of one sidecar's registry.
pub(super) struct ServiceFamilies {
    invoke_req_sent: Family<Labels, Counter>,
    invoke_req_recv: Family<Labels, Counter>,
    invoke_res_sent: Family<Labels, Counter>,
    invoke_res_recv: Family<Labels, Counter>,
    invoke_res_recv_latency: Hist,
    component_loaded: Family<Labels, Count>,
    component_init: Family<Labels, Counter>,
    component_init_fail: Family<Labels, Counter>,
}

impl ServiceFamilies {
    pub(super) fn new(latency: &Buckets) -> Self {
        Self {
            invoke_req_sent: Family::default(),
            invoke_req_recv: Family::default(),
            invoke_res_sent: Family::default(),
            invoke_res_recv: Family::default(),
            invoke_res_recv_latency: latency.family(),
            component_loaded: Family::default(),
            component_init: Family::default(),
            component_init_fail: Family::default(),
        }
    }

    pub(super) fn register(&self, r: &mut Registry) {
        r.register("dapr_runtime_service_invocation_req_sent", "The number of requests sent via service invocation.", self.invoke_req_sent.clone());
        r.register("dapr_runtime_service_invocation_req_recv", "The number of requests received via service invocation.", self.invoke_req_recv.clone());
        r.register("dapr_runtime_service_invocation_res_sent", "The number of responses sent via service invocation.", self.invoke_res_sent.clone());
        r.register("dapr_runtime_service_invocation_res_recv", "The number of responses received via service invocation.", self.invoke_res_recv.clone());
        r.register("dapr_runtime_service_invocation_res_recv_latency_ms", "The latency of service invocation response.", self.invoke_res_recv_latency.clone());
        r.register("dapr_runtime_component_loaded", "The number of successfully loaded components.", self.component_loaded.clone());
        r.register("dapr_runtime_component_init", "The number of initialized components.", self.component_init.clone());
        r.register("dapr_runtime_component_init_fail", "The number of component initialization failures.", self.component_init_fail.clone());
    }
}

impl Metrics {
    /// A call to another sidecar is about to be sent.
    pub fn invoke_sent(&self, target: &str, streaming: bool) {
        if self.0.enabled {
            let h = self.0.cache.invoke_sent.get(&[target, kind(streaming)], || {
                let l = self.labels(&[("dst_app_id", target), ("type", kind(streaming))]);
                vec![Handle::Counter(self.0.f.service.invoke_req_sent.get_or_create(&l).clone())]
            });
            h[0].inc();
        }
    }

    /// Another sidecar answered (`status`: the app's HTTP status, or a gRPC code below 100);
    /// also records the gRPC client RPC, with its (request, response) message sizes when given.
    #[allow(clippy::too_many_arguments)] // reason: one call site per RPC kind; a struct would only rename them.
    pub fn invoke_answered(&self, target: &str, streaming: bool, rpc: &str, grpc: tonic::Code, status: i32, started: Instant, sizes: Option<(u64, u64)>) {
        if !self.0.enabled {
            return;
        }
        self.invoke_response(target, streaming, status, Some(started));
        self.grpc_client_rpc(rpc, grpc as i32, started, sizes);
    }

    /// A proxied gRPC call (`dapr-app-id`) to `target` ended with gRPC `code`. daprd records the
    /// latency of unary calls only: a stream's end says nothing about the target's speed.
    pub fn proxy_answered(&self, target: &str, streaming: bool, code: i32, started: Instant) {
        if self.0.enabled {
            self.invoke_response(target, streaming, code, (!streaming).then_some(started));
        }
    }

    /// `res_recv`, and its latency when `started` is given.
    fn invoke_response(&self, target: &str, streaming: bool, status: i32, started: Option<Instant>) {
        let mut buf = itoa::Buffer::new();
        let status = buf.format(status);
        let f = &self.0.f.service;
        let h = self.0.cache.invoke_response.get(&[target, status, kind(streaming)], || {
            let l = self.labels(&[("src_app_id", target), ("status", status), ("type", kind(streaming))]);
            vec![Handle::Counter(f.invoke_res_recv.get_or_create(&l).clone())]
        });
        h[0].inc();
        if let Some(started) = started {
            let h = self.0.cache.invoke_response_latency.get(&[target, status], || {
                let l = self.labels(&[("src_app_id", target), ("status", status)]);
                vec![Handle::Hist(f.invoke_res_recv_latency.get_or_create(&l).clone())]
            });
            h[0].observe(ms(started));
        }
    }

    /// A call from another sidecar arrived.
    pub fn invoke_received(&self, caller: &str) {
        if self.0.enabled {
            let h = self.0.cache.invoke_received.get(&[caller], || vec![Handle::Counter(self.0.f.service.invoke_req_recv.get_or_create(&self.labels(&[("src_app_id", caller)])).clone())]);
            h[0].inc();
        }
    }

    /// The answer to another sidecar's call was sent.
    pub fn invoke_responded(&self, caller: &str, status: i32) {
        if self.0.enabled {
            let mut buf = itoa::Buffer::new();
            let status = buf.format(status);
            let h = self.0.cache.invoke_responded.get(&[caller, status], || {
                let l = self.labels(&[("dst_app_id", caller), ("status", status)]);
                vec![Handle::Counter(self.0.f.service.invoke_res_sent.get_or_create(&l).clone())]
            });
            h[0].inc();
        }
    }

    /// A component finished an init attempt (`component` is its type, e.g. `state.redis`).
    pub fn component_init(&self, component: &str, name: &str, error: Option<&str>) {
        if !self.0.enabled {
            return;
        }
        let f = &self.0.f.service;
        match error {
            None => {
                f.component_loaded.get_or_create(&self.labels(&[])).0.inc();
                f.component_init.get_or_create(&self.labels(&[("component", component)])).inc();
            }
            Some(_) => {
                let l = self.labels(&[("component", component), ("reason", "init"), ("componentName", name)]);
                f.component_init_fail.get_or_create(&l).inc();
            }
        }
    }
}
