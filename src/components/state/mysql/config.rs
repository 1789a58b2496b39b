//! Typed metadata of `state.mysql`: Dapr's keys and defaults, decoded once by the shared helper.
//!
//! Schema and table names are interpolated into SQL, so anything but a plain identifier is
//! refused here, before any connection is made.

use std::time::Duration;

use mysql_async::{OptsBuilder, PoolConstraints, PoolOpts};

use super::dsn::{self, GoDsn};
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
    /// Most connections the pool opens (`maxOpenConns`).
    pub max_open_conns: usize,
    /// Idle connections the pool keeps (`maxIdleConns`).
    pub max_idle_conns: usize,
    /// Absolute connection lifetime (`connMaxLifetime`).
    pub conn_max_lifetime: Option<Duration>,
    /// Idle time after which a connection above the idle count is closed (`connMaxIdleTime`).
    pub conn_max_idle_time: Option<Duration>,
}

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
        let timeout = md.duration(&["timeoutInSeconds", "timeout"], Duration::from_secs(20))?;
        let timeout = if timeout.is_zero() { Duration::from_secs(20) } else { timeout };
        let cleanup = md.duration(&["cleanupInterval", "cleanupIntervalInSeconds"], Duration::from_secs(3600))?;
        if let Some(pem) = md.string(&["pemPath"]) {
            return Err(bad("pemPath", format!("TLS to MySQL is not available in this build (mysql_async without a TLS feature); cannot use {pem:?}")));
        }
        if let Some(tls) = &dsn.tls {
            return Err(bad("connectionString", format!("tls={tls} asks for TLS, which is not available in this build")));
        }
        let max_open_conns = md.u64(&["maxOpenConns"], 0)? as usize;
        let max_open_conns = if max_open_conns == 0 { 100 } else { max_open_conns };
        let max_idle_conns = (md.u64(&["maxIdleConns"], 2)? as usize).min(max_open_conns);
        let positive = |d: Duration| (!d.is_zero()).then_some(d);
        let conn_max_lifetime = positive(md.duration(&["connMaxLifetime"], Duration::ZERO)?);
        let conn_max_idle_time = positive(md.duration(&["connMaxIdleTime"], Duration::ZERO)?);
        Ok(Self {
            dsn,
            schema_name,
            table_name,
            metadata_table_name,
            timeout,
            cleanup_interval: positive(cleanup),
            max_open_conns,
            max_idle_conns,
            conn_max_lifetime,
            conn_max_idle_time,
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
        assert_eq!(cfg(&[("cleanupIntervalInSeconds", "0")]).unwrap().cleanup_interval, None);
        assert_eq!(cfg(&[("cleanupInterval", "-1")]).unwrap().cleanup_interval, None);
        assert_eq!(cfg(&[("timeoutInSeconds", "5")]).unwrap().timeout, Duration::from_secs(5));
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
