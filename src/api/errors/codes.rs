//! Every Dapr error code rapr sends, once.

/// Malformed request body or parameters.
pub const ERR_MALFORMED_REQUEST: &str = "ERR_MALFORMED_REQUEST";
/// The request body could not be read.
pub const ERR_BODY_READ: &str = "ERR_BODY_READ";
/// No state store configured.
pub const ERR_STATE_STORE_NOT_CONFIGURED: &str = "ERR_STATE_STORE_NOT_CONFIGURED";
/// Unknown state store.
pub const ERR_STATE_STORE_NOT_FOUND: &str = "ERR_STATE_STORE_NOT_FOUND";
/// The store lacks transactions or query.
pub const ERR_STATE_STORE_NOT_SUPPORTED: &str = "ERR_STATE_STORE_NOT_SUPPORTED";
/// More operations than the store allows.
pub const ERR_STATE_STORE_TOO_MANY_TRANSACTIONS: &str = "ERR_STATE_STORE_TOO_MANY_TRANSACTIONS";
/// Unknown transaction operation.
pub const ERR_NOT_SUPPORTED_STATE_OPERATION: &str = "ERR_NOT_SUPPORTED_STATE_OPERATION";
/// Get failed.
pub const ERR_STATE_GET: &str = "ERR_STATE_GET";
/// Save failed.
pub const ERR_STATE_SAVE: &str = "ERR_STATE_SAVE";
/// Delete failed.
pub const ERR_STATE_DELETE: &str = "ERR_STATE_DELETE";
/// Bulk delete failed (gRPC `DeleteBulkState`).
pub const ERR_STATE_BULK_DELETE: &str = "ERR_STATE_BULK_DELETE";
/// Bulk get failed.
pub const ERR_STATE_BULK_GET: &str = "ERR_STATE_BULK_GET";
/// Transaction failed.
pub const ERR_STATE_TRANSACTION: &str = "ERR_STATE_TRANSACTION";
/// Query failed.
pub const ERR_STATE_QUERY: &str = "ERR_STATE_QUERY";
/// Sidecar not ready.
pub const ERR_HEALTH_NOT_READY: &str = "ERR_HEALTH_NOT_READY";
/// Outbound not ready.
pub const ERR_OUTBOUND_HEALTH_NOT_READY: &str = "ERR_OUTBOUND_HEALTH_NOT_READY";
/// `?appid=` on healthz does not match.
pub const ERR_HEALTH_APPID_NOT_MATCH: &str = "ERR_HEALTH_APPID_NOT_MATCH";
/// Route not found.
pub const ERR_DIRECT_INVOKE: &str = "ERR_DIRECT_INVOKE";
/// Metadata could not be read.
pub const ERR_METADATA_GET: &str = "ERR_METADATA_GET";

/// ErrorInfo domain of every Dapr error.
pub const DOMAIN: &str = "dapr.io";
/// No secret store configured.
pub const ERR_SECRET_STORES_NOT_CONFIGURED: &str = "ERR_SECRET_STORES_NOT_CONFIGURED";
/// Unknown secret store.
pub const ERR_SECRET_STORE_NOT_FOUND: &str = "ERR_SECRET_STORE_NOT_FOUND";
/// Secret scopes deny the key.
pub const ERR_PERMISSION_DENIED: &str = "ERR_PERMISSION_DENIED";
/// Reading a secret failed.
pub const ERR_SECRET_GET: &str = "ERR_SECRET_GET";
/// No pub/sub adapter (daprd never answers it: it always has one).
pub const ERR_PUBSUB_NOT_CONFIGURED: &str = "ERR_PUBSUB_NOT_CONFIGURED";
/// Unknown pub/sub component.
pub const ERR_PUBSUB_NOT_FOUND: &str = "ERR_PUBSUB_NOT_FOUND";
/// No pub/sub name in the request.
pub const ERR_PUBSUB_EMPTY: &str = "ERR_PUBSUB_EMPTY";
/// No topic in the request.
pub const ERR_TOPIC_NAME_EMPTY: &str = "ERR_TOPIC_NAME_EMPTY";
/// The component's scopes forbid the topic to this app.
pub const ERR_PUBSUB_FORBIDDEN: &str = "ERR_PUBSUB_FORBIDDEN";
/// The broker failed the publish.
pub const ERR_PUBSUB_PUBLISH_MESSAGE: &str = "ERR_PUBSUB_PUBLISH_MESSAGE";
/// The CloudEvent could not be built.
pub const ERR_PUBSUB_CLOUD_EVENTS_SER: &str = "ERR_PUBSUB_CLOUD_EVENTS_SER";
/// Bulk events could not be read or serialized.
pub const ERR_PUBSUB_EVENTS_SER: &str = "ERR_PUBSUB_EVENTS_SER";
/// Request metadata could not be read (`rawPayload`).
pub const ERR_PUBSUB_REQUEST_METADATA: &str = "ERR_PUBSUB_REQUEST_METADATA";
