//! The control socket of a `rapr run -f`: how `rapr stop --app-id X` stops one app of a run that
//! hosts several and leaves the others running.
//!
//! The Dapr CLI does this by signalling that app's daprd process. rapr's sidecars live inside the
//! run's own process, so there is no per-app pid to signal: the run listens on a Unix socket,
//! `$RAPR_HOME/run/<pid>.sock`, named in each of its apps' records. A request is one line,
//! `stop <app-id>`, answered `ok` once the run has begun stopping that app, or `unknown` when it
//! hosts no such app. The caller then waits for the app's record to go, as for a whole run.
//!
//! The listener keeps no state of its own: each request becomes a `ControlRequest` message to the
//! run's loop (run_file.rs), which owns the apps, and the loop's answer is relayed back.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// How long either side waits for the other's line.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest request line read (an app id is a short DNS-like name).
const MAX_LINE: u64 = 1024;

/// Errors of the control socket.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The socket could not be created, reached, read or written.
    #[error("control socket {path}: {source}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The run did not answer in time.
    #[error("control socket {0}: no answer within {IO_TIMEOUT:?}")]
    Timeout(PathBuf),
    /// The run hosts no app of that id (it may have just exited).
    #[error("the run does not host app id {0}")]
    NotHosted(String),
    /// The run answered something else.
    #[error("control socket {path}: unexpected answer {answer:?}")]
    Answer {
        /// The socket.
        path: PathBuf,
        /// What it said.
        answer: String,
    },
}

/// A request to the run's loop: stop `app_id`; `reply` says whether the run hosts it.
#[derive(Debug)]
pub struct ControlRequest {
    /// The app to stop.
    pub app_id: String,
    /// `true` once the app is stopping, `false` if the run hosts no such app.
    pub reply: oneshot::Sender<bool>,
}

/// The listening socket; stops listening and removes its file when dropped.
pub struct ControlSocket {
    path: PathBuf,
    task: JoinHandle<()>,
}

impl ControlSocket {
    /// Listens on `path`, sending each request to `requests`.
    pub fn bind(path: PathBuf, requests: mpsc::Sender<ControlRequest>) -> Result<Self, ControlError> {
        let io = |source| ControlError::Io { path: path.clone(), source };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        // A socket left by a killed run that had the same pid.
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(io)?;
        // Only this user may stop this user's apps.
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).map_err(io)?;
        let task = tokio::spawn(serve(listener, requests));
        Ok(Self { path, task })
    }

    /// Where it listens.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn serve(listener: UnixListener, requests: mpsc::Sender<ControlRequest>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(answer(stream, requests.clone()));
            }
            Err(e) => {
                // Out of descriptors, usually: back off rather than spin.
                tracing::warn!(error = %e, "the run's control socket failed to accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn parse(line: &str) -> Option<&str> {
    line.trim_end().strip_prefix("stop ").map(str::trim).filter(|id| !id.is_empty())
}

async fn answer(stream: UnixStream, requests: mpsc::Sender<ControlRequest>) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let read = tokio::time::timeout(IO_TIMEOUT, BufReader::new(read.take(MAX_LINE)).read_line(&mut line)).await;
    let reply = match (read, parse(&line)) {
        (Ok(Ok(_)), Some(app_id)) => {
            let (reply, answer) = oneshot::channel();
            if requests.send(ControlRequest { app_id: app_id.to_string(), reply }).await.is_err() {
                "closing"
            } else {
                match answer.await {
                    Ok(true) => "ok",
                    Ok(false) => "unknown",
                    Err(_) => "closing",
                }
            }
        }
        _ => "invalid",
    };
    let _ = write.write_all(format!("{reply}\n").as_bytes()).await;
}

/// Asks the run listening on `path` to stop `app_id`; `Ok` once it is stopping.
pub async fn request_stop(path: &Path, app_id: &str) -> Result<(), ControlError> {
    let io = |source| ControlError::Io { path: path.to_path_buf(), source };
    let exchange = async {
        let mut stream = UnixStream::connect(path).await.map_err(io)?;
        stream.write_all(format!("stop {app_id}\n").as_bytes()).await.map_err(io)?;
        let mut line = String::new();
        BufReader::new(stream.take(MAX_LINE)).read_line(&mut line).await.map_err(io)?;
        Ok::<_, ControlError>(line)
    };
    let line = tokio::time::timeout(IO_TIMEOUT, exchange).await.map_err(|_| ControlError::Timeout(path.to_path_buf()))??;
    match line.trim_end() {
        "ok" => Ok(()),
        "unknown" => Err(ControlError::NotHosted(app_id.to_string())),
        other => Err(ControlError::Answer { path: path.to_path_buf(), answer: other.to_string() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse() {
        assert_eq!(parse("stop orders\n"), Some("orders"));
        assert_eq!(parse("stop \n"), None);
        assert_eq!(parse("halt orders\n"), None);
    }

    #[tokio::test]
    async fn a_stop_reaches_the_run_and_its_answer_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run").join("1.sock");
        let (tx, mut rx) = mpsc::channel(4);
        let socket = ControlSocket::bind(path.clone(), tx).unwrap();
        // The run's loop: hosts only "a".
        tokio::spawn(async move {
            while let Some(req) = rx.recv().await {
                let _ = req.reply.send(req.app_id == "a");
            }
        });
        request_stop(&path, "a").await.unwrap();
        assert!(matches!(request_stop(&path, "b").await, Err(ControlError::NotHosted(id)) if id == "b"));
        drop(socket);
        assert!(!path.exists(), "the socket file goes with the run");
        assert!(matches!(request_stop(&path, "a").await, Err(ControlError::Io { .. })));
    }
}
