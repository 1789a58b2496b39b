//! The suite checked against a broker that loses every publish: every publishing check must fail.

use super::*;
use crate::components::pubsub::{Feature, PubSubError};

/// Takes subscriptions, refuses every publish: every check that publishes must fail.
struct Refusing;

#[async_trait]
impl PubSub for Refusing {
    fn features(&self) -> &'static [Feature] {
        &[]
    }
    async fn publish(&self, _req: PublishRequest) -> Result<(), PubSubError> {
        Err(PubSubError::Unavailable("refusing".into()))
    }
    async fn subscribe(&self, _req: SubscribeRequest, _h: Arc<dyn MessageHandler>, _c: CancellationToken) -> Result<(), PubSubError> {
        Ok(())
    }
    async fn ping(&self) -> Result<(), PubSubError> {
        Ok(())
    }
}

#[tokio::test]
async fn a_broker_that_loses_publishes_fails_every_publishing_check() {
    let report = run(Target {
        label: "refusing".into(),
        broker: Arc::new(Refusing),
        caps: Capabilities { closed_refuses: false, ..Capabilities::DURABLE },
        still_stored: None,
        redelivery_within: Duration::ZERO,
        subscribe_metadata: Metadata::new(),
    })
    .await;
    let failed: Vec<&str> = report.results.iter().filter(|(_, v)| matches!(v, Verdict::Failed(_))).map(|(c, _)| *c).collect();
    assert_eq!(failed, ["round trip", "ack removes", "fan-out", "bulk publish", "retry", "park", "restart", "competing", "order"]);
    let table = matrix(&[report]);
    assert!(table.contains("ping          pass") && table.contains("closed        -"), "{table}");
}
