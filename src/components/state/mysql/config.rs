//! Typed metadata of `state.mysql`: exactly the keys contrib's v1.18 store reads
//! (`connectionString`, `schemaName`, `tableName`, `metadataTableName`, `timeoutInSeconds`,
//! `cleanupInterval`, `pemPath`), with its defaults; any other key is left unread, so the
//! registry warns about it. The pool is sized as Go's `database/sql` defaults leave contrib's
//! (2 idle connections, no lifetime limit), with rapr's own cap of 100 open connections where Go
//! has none.
//!
//! Schema and table names are interpolated into SQL, so anything but a plain identifier is
//! refused here, before any connection is made.

use std::time::Duration;

use mysql_async::{OptsBuilder, PoolConstraints, PoolOpts};

use super::dsn::{self, GoDsn};
use crate::config::duration::{self, BareInteger};
use crate::components::metadata::{ComponentMetadata, MetadataError};

/// Typed metadata of `state.mysql`.
#[derive(Debug, Clone, PartialEq)]
pub struct MysqlConfig {
    /// The parsed `connectionString`.
    pub dsn: GoDsn,
    /// Database holding the tables (created if missing).
    pub schema_name: String,
    /// State table.
    pub table_name: String,
    /// Metadata table (holds `last-cleanup`).
    pub metadata_table_name: String,
    /// Per-operation timeout.
    pub timeout: Duration,
    /// Interval between expired-row sweeps; `None` disables them.
    pub cleanup_interval: Option<Duration>,
    /// Most connections the pool opens.
    pub max_open_conns: usize,
    /// Idle connections the pool keeps.
    pub max_idle_conns: usize,
    /// Absolute connection lifetime (none, as Go's default).
    pub conn_max_lifetime: Option<Duration>,
    /// Idle time after which a connection above the idle count is closed (none, as Go's default).
    pub conn_max_idle_time: Option<Duration>,
}

/// contrib's `defaultTimeoutInSeconds`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);
/// contrib's `defaultCleanupInterval`.
const DEFAULT_CLEANUP: Duration = Duration::from_secs(3600);
/// Go's `database/sql` default idle pool size (contrib sets none).
const GO_MAX_IDLE_CONNS: usize = 2;
/// rapr's cap on open connections (Go's default is unlimited).
const MAX_OPEN_CONNS: usize = 100;

fn bad(key: &str, reason: impl Into<String>) -> MetadataError {
    MetadataError { component: String::new(), key: key.into(), reason: reason.into() }
}

/// Identifiers interpolated into SQL: ASCII letters, digits and `_` only (Dapr's rule).
pub fn valid_identifier(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl MysqlConfig {
    /// Decodes and validates the component's metadata (the caller fills in the component name).
    pub fn from_metadata(md: &mut ComponentMetadata) -> Result<Self, MetadataError> {
        let raw = md.required(&["connectionString"])?;
        let dsn = dsn::parse(&raw).map_err(|e| bad("connectionString", format!("not a valid MySQL DSN: {e}")))?;
        let schema_name = md.string(&["schemaName"]).unwrap_or_else(|| "dapr_state_store".into());
        let table_name = md.string(&["tableName"]).unwrap_or_else(|| "state".into());
        let metadata_table_name = md.string(&["metadataTableName"]).unwrap_or_else(|| "dapr_metadata".into());
        for (key, name) in [("schemaName", &schema_name), ("tableName", &table_name), ("metadataTableName", &metadata_table_name)] {
            if !valid_identifier(name) {
                return Err(bad(key, format!("{name:?} is not a valid identifier (ASCII letters, digits and _ only, at most 64)")));
            }
        }
        // contrib: an integer of seconds; zero or negative means the 20 s default.
        let timeout = match md.string(&["timeoutInSeconds"]) {
            None => DEFAULT_TIMEOUT,
            Some(v) => match v.trim().parse::<i64>() {
                Ok(n) if n > 0 => Duration::from_secs(n.unsigned_abs()),
                Ok(_) => DEFAULT_TIMEOUT,
                Err(_) => return Err(bad("timeoutInSeconds", format!("{v:?} is not an integer number of seconds"))),
            },
        };
        // contrib: a duration (bare integers are seconds); absent or empty is 1 h, zero or negative
        // disables the sweep.
        let cleanup = match md.string(&["cleanupInterval"]).filter(|v| !v.trim().is_empty()) {
            None => Some(DEFAULT_CLEANUP),
            Some(v) => duration::parse(v.trim(), BareInteger::Seconds)
                .map_err(|e| bad("cleanupInterval", format!("{v:?} is not a duration: {e}")))?
                .to_std()
                .filter(|d| !d.is_zero()),
        };
        if let Some(pem) = md.string(&["pemPath"]) {
            return Err(bad("pemPath", format!("TLS to MySQL is not available in this build (mysql_async without a TLS feature); cannot use {pem:?}")));
        }
        if let Some(tls) = &dsn.tls {
            return Err(bad("connectionString", format!("tls={tls} asks for TLS, which is not available in this build")));
        }
        Ok(Self {
            dsn,
            schema_name,
            table_name,
            metadata_table_name,
            timeout,
            cleanup_interval: cleanup,
            max_open_conns: MAX_OPEN_CONNS,
            max_idle_conns: GO_MAX_IDLE_CONNS,
            conn_max_lifetime: None,
            conn_max_idle_time: None,
        })
    }

    /// Options for a connection without a default database (used to create the schema).
    pub fn server_opts(&self) -> OptsBuilder {
        self.dsn.opts(None).pool_opts(PoolOpts::default().with_constraints(constraints(1, 1)))
    }

    /// Options for the store's pool, on the schema.
    pub fn pool_opts(&self) -> OptsBuilder {
        let mut pool = PoolOpts::default()
            .with_constraints(constraints(self.max_idle_conns, self.max_open_conns))
            .with_abs_conn_ttl(self.conn_max_lifetime);
        if let Some(idle) = self.conn_max_idle_time {
            pool = pool.with_inactive_connection_ttl(idle);
        }
        self.dsn.opts(Some(&self.schema_name)).pool_opts(pool)
    }

    /// How long connecting may take: the DSN's `timeout`, else the operation timeout.
    pub fn connect_timeout(&self) -> Duration {
        self.dsn.dial_timeout.unwrap_or(self.timeout)
    }
}

fn constraints(min: usize, max: usize) -> PoolConstraints {
    // min <= max and max >= 1 hold by construction above; fall back to the library's default otherwise.
    PoolConstraints::new(min.min(max.max(1)), max.max(1)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> Result<MysqlConfig, MetadataError> {
        let mut p: Vec<(String, String)> = vec![("connectionString".into(), "root:@tcp(127.0.0.1:3306)/?allowNativePasswords=true".into())];
        p.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        MysqlConfig::from_metadata(&mut ComponentMetadata::new("m", &p))
    }

    #[test]
    fn defaults_follow_dapr() {
        let c = cfg(&[]).unwrap();
        assert_eq!((c.schema_name.as_str(), c.table_name.as_str(), c.metadata_table_name.as_str()), ("dapr_state_store", "state", "dapr_metadata"));
        assert_eq!(c.timeout, Duration::from_secs(20));
        assert_eq!(c.cleanup_interval, Some(Duration::from_secs(3600)));
        assert_eq!(cfg(&[("cleanupInterval", "0")]).unwrap().cleanup_interval, None);
        assert_eq!(cfg(&[("cleanupInterval", "-1")]).unwrap().cleanup_interval, None);
        assert_eq!(cfg(&[("cleanupInterval", "")]).unwrap().cleanup_interval, Some(Duration::from_secs(3600)));
        assert_eq!(cfg(&[("cleanupInterval", "90s")]).unwrap().cleanup_interval, Some(Duration::from_secs(90)));
        assert_eq!(cfg(&[("timeoutInSeconds", "5")]).unwrap().timeout, Duration::from_secs(5));
        assert_eq!(cfg(&[("timeoutInSeconds", "0")]).unwrap().timeout, Duration::from_secs(20));
        assert_eq!(cfg(&[("timeoutInSeconds", "5s")]).unwrap_err().key, "timeoutInSeconds");
    }

    #[test]
    fn only_the_keys_contribs_store_reads_are_read() {
        let p: Vec<(String, String)> = [
            ("connectionString", "root:@tcp(127.0.0.1:3306)/"),
            ("timeout", "1s"),
            ("cleanupIntervalInSeconds", "1"),
            ("maxOpenConns", "3"),
            ("maxIdleConns", "1"),
            ("connMaxLifetime", "1m"),
            ("connMaxIdleTime", "1m"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let mut md = ComponentMetadata::new("m", &p);
        let c = MysqlConfig::from_metadata(&mut md).unwrap();
        assert_eq!((c.timeout, c.cleanup_interval), (Duration::from_secs(20), Some(Duration::from_secs(3600))));
        assert_eq!((c.max_open_conns, c.max_idle_conns, c.conn_max_lifetime, c.conn_max_idle_time), (100, 2, None, None));
        let mut unread = md.unread();
        unread.sort();
        assert_eq!(unread, ["cleanupintervalinseconds", "connmaxidletime", "connmaxlifetime", "maxidleconns", "maxopenconns", "timeout"]);
    }

    #[test]
    fn sql_in_names_and_tls_are_refused() {
        assert_eq!(cfg(&[("tableName", "x; DROP TABLE y")]).unwrap_err().key, "tableName");
        assert_eq!(cfg(&[("schemaName", "a`b")]).unwrap_err().key, "schemaName");
        assert_eq!(cfg(&[("metadataTableName", "")]).unwrap().metadata_table_name, "dapr_metadata");
        assert_eq!(cfg(&[("pemPath", "/ca.pem")]).unwrap_err().key, "pemPath");
        let mut md = ComponentMetadata::new("m", &[("connectionString".into(), "nonsense".into())]);
        assert_eq!(MysqlConfig::from_metadata(&mut md).unwrap_err().key, "connectionString");
    }
}
