//! The pub/sub runtime, above the brokers (`components::pubsub`): the CloudEvents envelope,
//! subscriptions of every style (programmatic, declarative, streaming) and their routing, and
//! the `SubscriptionManager` with one `Delivery` process per subscription that hands messages to
//! the app and decides, per message, acknowledge / redeliver / park (docs/architecture.md §3).

pub mod app_grpc;
pub mod app_http;
pub mod app_sink;
pub mod app_stream;
pub mod bulk;
pub mod cloudevents;
pub mod delivery;
pub mod handler;
pub mod manager;
pub mod outcome;
pub mod programmatic;
pub mod routing;
pub mod scopes;
pub mod start;
pub mod streams;
pub mod subscription;
pub mod table;

pub use subscription::{BulkSubscribe, Rule, Subscription, SubscriptionKind};
pub use table::{SubscriptionStatus, SubscriptionTable};
