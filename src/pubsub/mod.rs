//! The pub/sub runtime, above the brokers (`components::pubsub`): the CloudEvents envelope,
//! subscriptions of every style (programmatic, declarative, streaming) and their routing, and
//! the `SubscriptionManager` with one `Delivery` process per subscription that hands messages to
//! the app and decides, per message, acknowledge / redeliver / park (docs/architecture.md §3).

pub mod app_stream;
pub mod cloudevents;
pub mod programmatic;
pub mod routing;
pub mod subscription;
pub mod table;

pub use subscription::{BulkSubscribe, Rule, Subscription, SubscriptionKind};
pub use table::{SubscriptionStatus, SubscriptionTable};
