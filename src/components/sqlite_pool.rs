//! Blocking SQLite connections behind async calls: one writer thread (SQLite has one writer at a
//! time anyway) and a few reader threads, each owning its connection.
//!
//! Why threads and not `spawn_blocking`: a connection is not `Sync`, and keeping each on its own
//! thread avoids reopening it per call. Callers never share a mailbox with unrelated stores.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::components::state::StoreError;

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// A writer connection and reader connections, each on its own thread.
pub struct SqlitePool {
    writer: mpsc::Sender<Job>,
    readers: Vec<mpsc::Sender<Job>>,
    next: AtomicUsize,
}

impl SqlitePool {
    /// Starts one thread per connection opened by `open` (writer first, then `readers` readers).
    pub fn start(
        name: &str,
        readers: usize,
        open: impl Fn(bool) -> Result<Connection, StoreError>,
    ) -> Result<Self, StoreError> {
        let writer = spawn(format!("{name}-w"), open(true)?)?;
        let mut r = Vec::with_capacity(readers);
        for i in 0..readers {
            r.push(spawn(format!("{name}-r{i}"), open(false)?)?);
        }
        Ok(Self { writer, readers: r, next: AtomicUsize::new(0) })
    }

    /// Runs `f` on the writer connection.
    pub async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        run(&self.writer, f).await
    }

    /// Runs `f` on a reader connection (the writer when there are none).
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        if self.readers.is_empty() {
            return run(&self.writer, f).await;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        run(&self.readers[i], f).await
    }
}

fn spawn(name: String, mut conn: Connection) -> Result<mpsc::Sender<Job>, StoreError> {
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            // Ends when every sender is dropped: the pool is gone.
            while let Ok(job) = rx.recv() {
                job(&mut conn);
            }
        })
        .map_err(|e| StoreError::Backend(format!("cannot start sqlite thread: {e}")))?;
    Ok(tx)
}

async fn run<T: Send + 'static>(
    tx: &mpsc::Sender<Job>,
    f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let (reply, wait) = oneshot::channel();
    let job: Job = Box::new(move |conn| {
        let _ = reply.send(f(conn));
    });
    tx.send(job).map_err(|_| StoreError::Unavailable("sqlite connection thread has stopped".into()))?;
    wait.await.map_err(|_| StoreError::Unavailable("sqlite connection thread has stopped".into()))?
}

/// Maps a rusqlite error to a store error.
pub fn db_err(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}
