//! Unit tests of the policy lookup: targets, defaults, breaker instances, built-ins.
use super::*;
use crate::resiliency::breaker::BreakerState;

fn load_one(text: &str, app_id: &str) -> (Resiliency, Vec<ResourceError>) {
    let v: yaml_serde::Value = yaml_serde::from_str(text).unwrap();
    Resiliency::load(&[(PathBuf::from("r.yaml"), v)], app_id)
}

const DOC: &str = r#"
apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata:
  name: res
spec:
  policies:
    timeouts:
      fast: 1s
      DefaultTimeoutPolicy: 9s
    retries:
      three:
        duration: 10ms
        maxRetries: 3
      DefaultStatestoreComponentOutboundRetryPolicy:
        maxRetries: 1
    circuitBreakers:
      cb:
        trip: consecutiveFailures >= 1
  targets:
    apps:
      orders:
        timeout: fast
        retry: three
        circuitBreaker: cb
    components:
      store:
        outbound:
          retry: three
          circuitBreaker: cb
"#;

#[test]
fn targets_resolve_their_policies_and_share_one_breaker_per_target() {
    let (r, errors) = load_one(DOC, "me");
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(r.resource_names(), ["res".to_string()]);
    let app = r.for_endpoint("orders", "orders:m");
    assert_eq!(app.timeout(), Some(Duration::from_secs(1)));
    assert_eq!(app.retry().and_then(|r| r.max_retries), Some(3));
    assert_eq!(app.breaker_state(), Some(BreakerState::Closed));
    assert!(r.has_app_target("orders") && !r.has_app_target("other"));
    let out = r.for_component_outbound("store", ComponentKind::StateStore);
    assert_eq!(out.timeout(), None, "a target without timeout does not take the default");
    assert_eq!(out.retry().and_then(|r| r.max_retries), Some(3));
    assert!(r.for_component_inbound("store", ComponentKind::StateStore).is_noop());
    // Clones of the engine and later lookups share the same breaker instance.
    let again = r.clone().for_endpoint("orders", "orders:m");
    let fail = || async { Err::<(), _>(AttemptError::Permanent(())) };
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    rt.block_on(async {
        let _ = app.run(fail).await;
    });
    assert_eq!(again.breaker_state(), Some(BreakerState::Open));
    assert_eq!(out.breaker_state(), Some(BreakerState::Closed), "other targets have their own instance");
}

#[test]
fn untargeted_calls_take_the_most_specific_default() {
    let (r, _) = load_one(DOC, "me");
    let other_store = r.for_component_outbound("other", ComponentKind::StateStore);
    assert_eq!(other_store.retry().and_then(|r| r.max_retries), Some(1));
    assert_eq!(other_store.timeout(), Some(Duration::from_secs(9)), "the top-level default");
    let pubsub = r.for_component_outbound("bus", ComponentKind::PubSub);
    assert!(pubsub.retry().is_none());
    assert_eq!(pubsub.timeout(), Some(Duration::from_secs(9)));
    assert_eq!(r.for_endpoint("billing", "billing:m").timeout(), Some(Duration::from_secs(9)));
    assert!(Resiliency::none().for_endpoint("x", "x:m").is_noop());
}

#[test]
fn each_endpoint_of_an_app_has_its_own_breaker() {
    let (r, _) = load_one(DOC, "me");
    let fail = || async { Err::<(), _>(AttemptError::Permanent(())) };
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    rt.block_on(async {
        let _ = r.for_endpoint("orders", "orders:broken").run(fail).await;
    });
    assert_eq!(r.for_endpoint("orders", "orders:broken").breaker_state(), Some(BreakerState::Open));
    assert_eq!(r.for_endpoint("orders", "orders:fine").breaker_state(), Some(BreakerState::Closed), "one failing method never trips the app");
}

#[test]
fn built_in_policies_are_daprds_unless_a_resource_redefines_them() {
    let none = Resiliency::none().built_in(BuiltIn::ServiceRetries);
    assert_eq!(none.retry().and_then(|r| r.max_retries), Some(3));
    assert_eq!(none.timeout(), None);
    let doc = "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: b\nspec:\n  policies:\n    retries:\n      DaprBuiltInServiceRetries:\n        policy: constant\n        duration: 100ms\n        maxRetries: 1\n      DaprBuiltInInitializationRetries:\n        maxRetries: 9\n      DaprBuiltInActorNotFoundRetries:\n        maxRetries: 9\n";
    let (r, errors) = load_one(doc, "me");
    assert!(errors.is_empty(), "{errors:?}");
    let svc = r.built_in(BuiltIn::ServiceRetries);
    let spec = svc.retry().unwrap();
    assert_eq!(spec.max_retries, Some(3), "raised to daprd's minimum");
    assert_eq!(spec.backoff, crate::resiliency::retry::BackoffPolicy::Constant { interval: Duration::from_millis(100) });
    assert_eq!(r.built_in(BuiltIn::InitializationRetries).retry().unwrap().max_retries, Some(9));
    assert_eq!(r.built_in(BuiltIn::ActorNotFoundRetries).retry().unwrap().max_retries, Some(5), "protected");
}

#[test]
fn a_target_naming_an_unknown_policy_keeps_the_rest_and_takes_no_default() {
    let doc = "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: u\nspec:\n  policies:\n    timeouts:\n      t: 2s\n      DefaultTimeoutPolicy: 9s\n    retries:\n      DefaultRetryPolicy:\n        maxRetries: 1\n  targets:\n    apps:\n      b:\n        retry: nosuch\n        timeout: t\n      c:\n        timeout: nosuch\n";
    let (r, errors) = load_one(doc, "me");
    assert!(errors.is_empty(), "{errors:?}");
    let b = r.for_endpoint("b", "b:m");
    assert_eq!(b.timeout(), Some(Duration::from_secs(2)));
    assert!(b.retry().is_none(), "neither the unknown retry nor the default one");
    assert!(r.for_endpoint("c", "c:m").is_noop());
    assert!(r.has_app_target("c"), "still a target: built-in service retries stay off for it");
}
