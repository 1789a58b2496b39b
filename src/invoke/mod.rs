//! Service invocation: calling another app by id through its sidecar, or the local app.
//!
//! ```text
//! app A -> sidecar A (api/invoke.rs) -> nameres.rs: app id -> address of sidecar B
//!       -> remote.rs: ServiceInvocation/CallLocalStream (internal gRPC port), body streamed in chunks
//!       -> sidecar B (internal.rs) -> app_channel.rs -> app B (HTTP or gRPC)
//! ```
//! `proxy.rs` forwards gRPC calls for methods the sidecar does not serve (`dapr-app-id`).
//! `message.rs` holds the transport-free description of a call and its conversions to the wire.

pub mod app_channel;
pub mod app_conns;
pub mod external;
pub mod grpc_answer;
pub mod app_health;
pub mod internal;
pub mod message;
pub mod method;
pub mod nameres;
pub mod peer;
pub mod proxy;
pub mod remote;
pub mod tls;

/// Why an invocation failed before the target app answered.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InvokeError {
    /// No sidecar is registered for the app id.
    #[error("no host found with the given ID")]
    NotFound,
    /// The app id is malformed.
    #[error("invalid app id {0}")]
    InvalidAppId(String),
    /// The target sidecar could not be reached.
    #[error("{0}")]
    Unreachable(String),
    /// The connection to the target sidecar failed or was refused (gRPC UNAVAILABLE or
    /// UNAUTHENTICATED): what daprd's built-in service retries retry.
    #[error("{0}")]
    Unavailable(String),
    /// This sidecar has no app channel (`--app-port` unset).
    #[error("cannot invoke local endpoint: app channel not initialized")]
    NoAppChannel,
    /// The app failed to answer.
    #[error("{0}")]
    App(String),
    /// A malformed gRPC invocation.
    #[error("{0}")]
    InvalidRequest(String),
    /// The method name was refused (daprd's gRPC status text, as its `%v` prints it).
    #[error("rpc error: code = InvalidArgument desc = invalid method: {0}")]
    InvalidMethod(#[from] method::MethodError),
    /// The caller's body went over `--max-body-size` (daprd's limit reader).
    #[error("stream too large")]
    TooLarge,
    /// The name resolution backend failed.
    #[error("name resolution failed: {0}")]
    Resolver(String),
}
