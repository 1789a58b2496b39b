//! `SqliteLogStore`: the raft log, vote and committed id in SQLite (openraft's v2
//! `RaftLogStorage`). WAL with `synchronous=FULL`, so a commit is on disk when it returns: raft
//! may acknowledge nothing it could lose (the other SQLite stores' `NORMAL` could drop the last
//! commits on a power loss). Every statement runs on a blocking thread with the connection moved
//! there and back, so no tokio worker waits on an fsync. In memory (no data directory, as daprd)
//! the connections share one named in-memory database.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};
use rusqlite::{params, Connection, OptionalExtension};

use super::{NodeId, TypeConfig};

type SResult<T> = Result<T, StorageError<NodeId>>;

/// Where the database is: a file, or a shared in-memory database by name.
#[derive(Debug, Clone)]
pub enum DbLocation {
    File(std::path::PathBuf),
    Memory(String),
}

impl DbLocation {
    /// `raft.db` in `dir`, or a fresh in-memory database.
    pub fn in_dir(dir: Option<&Path>) -> Self {
        match dir {
            Some(d) => Self::File(d.join("raft.db")),
            None => Self::Memory(format!("file:rapr-raft-{}?mode=memory&cache=shared", uuid::Uuid::new_v4().simple())),
        }
    }

    /// Opens a connection, creating the tables; a file that is not a database is an error here.
    pub fn open(&self) -> rusqlite::Result<Connection> {
        let conn = match self {
            Self::File(p) => Connection::open(p)?,
            Self::Memory(uri) => Connection::open_with_flags(
                uri,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_CREATE | rusqlite::OpenFlags::SQLITE_OPEN_URI,
            )?,
        };
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        if matches!(self, Self::File(_)) {
            conn.pragma_update(None, "journal_mode", "WAL")?;
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS raft_log (idx INTEGER PRIMARY KEY, entry BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS raft_meta (k TEXT PRIMARY KEY, v BLOB NOT NULL);",
        )?;
        // A corrupt file passes `open`; reading its schema does not.
        conn.query_row("SELECT count(*) FROM raft_meta", [], |_| Ok(()))?;
        Ok(conn)
    }
}

/// One connection, moved to a blocking thread for each statement.
pub struct Db {
    at: DbLocation,
    /// Only touched through `&mut self`, so the store is Sync as openraft needs.
    conn: sync_wrapper::SyncWrapper<Option<Connection>>,
}

fn io(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl Db {
    /// Opens `at`.
    pub fn open(at: DbLocation) -> rusqlite::Result<Self> {
        let conn = at.open()?;
        Ok(Self { at, conn: sync_wrapper::SyncWrapper::new(Some(conn)) })
    }

    /// Another connection to the same database.
    pub fn reopen(&self) -> Self {
        Self { at: self.at.clone(), conn: sync_wrapper::SyncWrapper::new(self.at.open().ok()) }
    }

    /// Runs `f` on the connection, off the async threads.
    pub async fn run<T: Send + 'static>(&mut self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static) -> std::io::Result<T> {
        let mut conn = match self.conn.get_mut().take() {
            Some(c) => c,
            None => self.at.open().map_err(io)?,
        };
        let (conn, out) = tokio::task::spawn_blocking(move || {
            let out = f(&mut conn);
            (conn, out)
        })
        .await
        .map_err(io)?;
        *self.conn.get_mut() = Some(conn);
        out.map_err(io)
    }

    /// A JSON value of the meta table.
    pub async fn meta_get<T: serde::de::DeserializeOwned + Send + 'static>(&mut self, key: &'static str) -> std::io::Result<Option<T>> {
        let bytes: Option<Vec<u8>> = self.run(move |c| c.query_row("SELECT v FROM raft_meta WHERE k = ?1", [key], |r| r.get(0)).optional()).await?;
        bytes.map(|b| serde_json::from_slice(&b).map_err(io)).transpose()
    }

    /// Sets a JSON value of the meta table (durable when it returns).
    pub async fn meta_put<T: serde::Serialize>(&mut self, key: &'static str, v: &T) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(v).map_err(io)?;
        self.run(move |c| c.execute("INSERT OR REPLACE INTO raft_meta (k, v) VALUES (?1, ?2)", params![key, bytes]).map(|_| ())).await
    }
}

/// The log store (and, as a reopened copy, its readers).
pub struct SqliteLogStore {
    db: Db,
}

impl SqliteLogStore {
    /// The store of `at`.
    pub fn open(at: DbLocation) -> rusqlite::Result<Self> {
        Ok(Self { db: Db::open(at)? })
    }
}

fn range_sql<RB: RangeBounds<u64>>(range: &RB) -> (i64, i64) {
    let lo = match range.start_bound() {
        Bound::Included(x) => *x,
        Bound::Excluded(x) => x.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let hi = match range.end_bound() {
        Bound::Included(x) => x.saturating_add(1),
        Bound::Excluded(x) => *x,
        Bound::Unbounded => u64::MAX,
    };
    let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    (clamp(lo), clamp(hi))
}

fn decode(bytes: &[u8]) -> std::io::Result<Entry<TypeConfig>> {
    serde_json::from_slice(bytes).map_err(io)
}

impl RaftLogReader<TypeConfig> for SqliteLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(&mut self, range: RB) -> SResult<Vec<Entry<TypeConfig>>> {
        let (lo, hi) = range_sql(&range);
        let rows: Vec<Vec<u8>> = self
            .db
            .run(move |c| {
                let mut st = c.prepare_cached("SELECT entry FROM raft_log WHERE idx >= ?1 AND idx < ?2 ORDER BY idx")?;
                let rows = st.query_map([lo, hi], |r| r.get::<_, Vec<u8>>(0))?;
                rows.collect()
            })
            .await
            .map_err(|e| StorageIOError::read_logs(&e))?;
        let entries: std::io::Result<Vec<Entry<TypeConfig>>> = rows.iter().map(|b| decode(b)).collect();
        entries.map_err(|e| StorageIOError::read_logs(&e).into())
    }
}

impl RaftLogStorage<TypeConfig> for SqliteLogStore {
    type LogReader = SqliteLogStore;

    async fn get_log_state(&mut self) -> SResult<LogState<TypeConfig>> {
        let last_purged: Option<LogId<NodeId>> = self.db.meta_get("last_purged").await.map_err(|e| StorageIOError::read_logs(&e))?;
        let last: Option<Vec<u8>> = self
            .db
            .run(|c| c.query_row("SELECT entry FROM raft_log ORDER BY idx DESC LIMIT 1", [], |r| r.get(0)).optional())
            .await
            .map_err(|e| StorageIOError::read_logs(&e))?;
        let last_log_id = match last {
            Some(b) => Some(decode(&b).map_err(|e| StorageIOError::read_logs(&e))?.log_id),
            None => last_purged,
        };
        Ok(LogState { last_purged_log_id: last_purged, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        SqliteLogStore { db: self.db.reopen() }
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> SResult<()> {
        self.db.meta_put("vote", vote).await.map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> SResult<Option<Vote<NodeId>>> {
        self.db.meta_get("vote").await.map_err(|e| StorageIOError::read_vote(&e).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> SResult<()> {
        self.db.meta_put("committed", &committed).await.map_err(|e| StorageIOError::write(&e).into())
    }

    async fn read_committed(&mut self) -> SResult<Option<LogId<NodeId>>> {
        let c: Option<Option<LogId<NodeId>>> = self.db.meta_get("committed").await.map_err(|e| StorageIOError::read(&e))?;
        Ok(c.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> SResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let rows: Vec<(i64, Vec<u8>)> = entries
            .into_iter()
            .map(|e| Ok((i64::try_from(e.log_id.index).map_err(io)?, serde_json::to_vec(&e).map_err(io)?)))
            .collect::<std::io::Result<_>>()
            .map_err(|e| StorageIOError::write_logs(&e))?;
        let done = self
            .db
            .run(move |c| {
                let tx = c.transaction()?;
                {
                    let mut st = tx.prepare_cached("INSERT OR REPLACE INTO raft_log (idx, entry) VALUES (?1, ?2)")?;
                    for (idx, bytes) in &rows {
                        st.execute(params![idx, bytes])?;
                    }
                }
                // synchronous=FULL: on disk when the commit returns.
                tx.commit()
            })
            .await;
        match done {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let msg = e.to_string();
                callback.log_io_completed(Err(std::io::Error::other(msg.clone())));
                Err(StorageIOError::write_logs(&std::io::Error::other(msg)).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> SResult<()> {
        let from = i64::try_from(log_id.index).unwrap_or(i64::MAX);
        self.db.run(move |c| c.execute("DELETE FROM raft_log WHERE idx >= ?1", [from]).map(|_| ())).await.map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> SResult<()> {
        let upto = i64::try_from(log_id.index).unwrap_or(i64::MAX);
        let bytes = serde_json::to_vec(&log_id).map_err(|e| StorageIOError::write_logs(&e))?;
        self.db
            .run(move |c| {
                let tx = c.transaction()?;
                tx.execute("INSERT OR REPLACE INTO raft_meta (k, v) VALUES ('last_purged', ?1)", [bytes])?;
                tx.execute("DELETE FROM raft_log WHERE idx <= ?1", [upto])?;
                tx.commit()
            })
            .await
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}
