//! `call`: ask a process and wait for its reply with a deadline. Every `*Client` front door uses
//! it, so timeouts and a stopped process are handled the same way everywhere.

use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{ActorRef, Message, RpcReplyPort};

/// Why a call got no reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// No reply within the deadline.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The process dropped the reply port (it is stopping).
    #[error("the request was dropped")]
    Dropped,
    /// The process is not running.
    #[error("the process is not running: {0}")]
    Stopped(String),
}

/// Sends the message `build` makes and waits at most `timeout` for the reply.
pub async fn call<M: Message, T: Send + 'static>(
    to: &ActorRef<M>,
    build: impl FnOnce(RpcReplyPort<T>) -> M,
    timeout: Duration,
) -> Result<T, CallError> {
    match to.call(build, Some(timeout)).await {
        Ok(CallResult::Success(r)) => Ok(r),
        Ok(CallResult::Timeout) => Err(CallError::Timeout(timeout)),
        Ok(CallResult::SenderError) => Err(CallError::Dropped),
        Err(e) => Err(CallError::Stopped(e.to_string())),
    }
}
