//! `SidecarHost`: a sidecar that `rapr run` hosts in its own process, on a tokio runtime of its
//! own whose every thread runs inside a `sidecar{app_id=<id>}` tracing span.
//!
//! Why: daprd puts its app id on every log line (`app_id=<id>` in text, an `app_id` field in
//! JSON). In `dapr run -f` with daprd logging to the console, the CLI prints daprd's lines as
//! they are, without a `== APP - <id> == ` prefix, so that field is what tells one app's sidecar
//! from another's. rapr hosts several sidecars in one process behind one log subscriber, so the
//! field has to come from a span, and a span is easily lost: `tokio::spawn` does not carry the
//! caller's span, and hyper's connection tasks, ractor's processes and component tasks are all
//! spawned. Instrumenting every spawn would lose the field at the first one forgotten. Instead
//! the span is structural: `tokio::spawn` always lands on the current runtime, so everything a
//! sidecar starts stays on its runtime's threads (workers and blocking pool), and each of those
//! threads enters the span when it starts. Every event logged there, and every span opened there
//! (such as a request's), descends from it, and the log layer (`runtime/logging.rs`) writes its
//! `app_id` as the line's own field: `time="…" level=info msg="…" app_id=orders scope=…`.
//! A one-app `rapr run` uses the same host, as daprd's lines always carry the id.
//!
//! A run file's `daprdLogDestination: file` (or `fileAndConsole`) is structural the same way:
//! each of the runtime's threads sends its log lines to the sidecar's log file
//! (`runtime::logging::set_thread_sink`).
//!
//! The host also watches its sidecar: [`SidecarHost::exited`] resolves when the sidecar stops
//! by itself (`POST /v1.0/shutdown`, or its root failing), which ends the run as daprd exiting
//! ends a `dapr run`.
//!
//! The span is at ERROR level so that a `warn` or `error` log filter still records it (a
//! filtered-out span would drop the field from the lines that do pass).

use std::cell::RefCell;
use std::time::Duration;

use tokio::runtime::Runtime;

use tokio::task::JoinHandle;

use crate::config::SidecarArgs;
use crate::runtime::logging::{set_thread_sink, LineSink};
use crate::runtime::shutdown::ShutdownHandle;
use crate::sidecar::Sidecar;

thread_local! {
    /// The sidecar span this runtime thread runs in: entered when the thread starts, left when
    /// it stops (a thread belongs to one runtime, so to one sidecar, for its whole life).
    static SIDECAR_SPAN: RefCell<Option<tracing::span::EnteredSpan>> = const { RefCell::new(None) };
}

/// Errors hosting a sidecar.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// Its runtime could not be built.
    #[error("cannot start a runtime for the sidecar of {app_id}: {source}")]
    Runtime {
        /// App id.
        app_id: String,
        /// Why.
        source: std::io::Error,
    },
    /// The sidecar did not start.
    #[error("{0}")]
    Start(String),
}

/// How a sidecar's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SidecarEnd {
    /// It shut down when asked (by `stop`, or through its shutdown API).
    Clean,
    /// Its runtime stopped without being asked.
    Failed,
}

/// A running sidecar and the runtime it runs on.
pub struct SidecarHost {
    app_id: String,
    shutdown: Option<ShutdownHandle>,
    running: Option<JoinHandle<()>>,
    end: Option<SidecarEnd>,
    runtime: Option<Runtime>,
}

fn runtime_for(app_id: &str, workers: usize, sink: Option<LineSink>) -> std::io::Result<Runtime> {
    let span = tracing::error_span!("sidecar", app_id = %app_id);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .enable_all()
        .thread_name(format!("rapr-{app_id}"))
        .on_thread_start(move || {
            SIDECAR_SPAN.with(|s| *s.borrow_mut() = Some(span.clone().entered()));
            set_thread_sink(sink.clone());
        })
        .on_thread_stop(|| {
            SIDECAR_SPAN.with(|s| drop(s.borrow_mut().take()));
            set_thread_sink(None);
        })
        .build()
}

impl SidecarHost {
    /// Starts the sidecar of `flags.app_id` on a new runtime of `workers` worker threads,
    /// its log lines to `sink` when given.
    pub async fn start(flags: SidecarArgs, api_token: Option<String>, workers: usize, sink: Option<LineSink>) -> Result<Self, HostError> {
        let app_id = flags.app_id.clone();
        let runtime = runtime_for(&app_id, workers, sink).map_err(|source| HostError::Runtime { app_id: app_id.clone(), source })?;
        // Started on its runtime: the root's pre_start runs in the spawning task, and what it
        // spawns (every child process, the listeners) must land there too.
        let started = runtime.spawn(Sidecar::start(flags, api_token)).await;
        let mut host = Self { app_id, shutdown: None, running: None, end: None, runtime: Some(runtime) };
        match started {
            Ok(Ok(sidecar)) => {
                host.shutdown = Some(sidecar.shutdown.clone());
                host.running = host.runtime.as_ref().map(|rt| rt.spawn(sidecar.run_until_stopped()));
                Ok(host)
            }
            Ok(Err(e)) => Err(HostError::Start(e.to_string())),
            Err(e) => Err(HostError::Start(format!("the sidecar of {} failed to start: {e}", host.app_id))),
        }
    }

    /// Resolves when the sidecar has stopped without `stop` (cancel-safe; pending forever once
    /// reported).
    pub async fn exited(&mut self) -> SidecarEnd {
        match (self.end, self.running.as_mut()) {
            (None, Some(running)) => {
                let _ = running.await;
                self.running = None;
                let end = if self.shutdown.as_ref().is_some_and(ShutdownHandle::is_requested) { SidecarEnd::Clean } else { SidecarEnd::Failed };
                self.end = Some(end);
                end
            }
            _ => std::future::pending().await,
        }
    }

    /// Drains and stops the sidecar, then its runtime (tasks the sidecar left behind are
    /// cancelled after a short grace period); how it ended.
    pub async fn stop(mut self) -> SidecarEnd {
        if let Some(s) = &self.shutdown {
            s.trigger();
        }
        if let Some(running) = self.running.take() {
            if let Err(e) = running.await {
                tracing::warn!(app_id = %self.app_id, error = %e, "the sidecar's shutdown task failed");
            }
        }
        let end = self.end.unwrap_or(SidecarEnd::Clean);
        self.shutdown_runtime().await;
        end
    }

    async fn shutdown_runtime(&mut self) {
        if let Some(rt) = self.runtime.take() {
            // Shutting a runtime down blocks; never on this (async) thread.
            let _ = tokio::task::spawn_blocking(move || rt.shutdown_timeout(Duration::from_secs(2))).await;
        }
    }
}

impl Drop for SidecarHost {
    fn drop(&mut self) {
        // Dropping a runtime from async code panics; this one never blocks.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn spawned_tasks_and_blocking_threads_run_in_the_sidecar_span() {
        // Spans are only recorded under a subscriber; nextest runs each test in its own process.
        let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry());
        let rt = runtime_for("span-test", 1, None).unwrap();
        let seen = rt
            .spawn(async {
                let from_task = tokio::spawn(async { tracing::Span::current().metadata().map(|m| m.name()) }).await.unwrap();
                let from_blocking = tokio::task::spawn_blocking(|| tracing::Span::current().metadata().map(|m| m.name())).await.unwrap();
                (from_task, from_blocking)
            })
            .await
            .unwrap();
        assert_eq!(seen, (Some("sidecar"), Some("sidecar")));
        tokio::task::spawn_blocking(move || rt.shutdown_timeout(Duration::from_secs(1))).await.unwrap();
    }
}
