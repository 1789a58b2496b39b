//! Typed metadata of `state.postgresql` v1, with Dapr's keys, aliases and defaults
//! (components-contrib `common/component/postgresql/v1/metadata.go` and the PostgreSQL auth
//! metadata), plus the two checks that keep user text out of SQL and out of error messages:
//! table names must be plain identifiers, and a connection string that does not parse is
//! reported without echoing it (it may hold a password).

use std::str::FromStr;
use std::time::Duration;

use crate::components::metadata::{ComponentMetadata, MetadataError};

/// How statements are sent: Dapr's `queryExecMode`, reduced to what tokio-postgres can vary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecMode {
    /// Prepare each statement once per connection and reuse it (`""`, `cache_statement`,
    /// `cache_describe`): Dapr's default.
    Cached,
    /// Prepare an unnamed statement per call (`describe_exec`, `exec`, `simple_protocol`): works
    /// behind poolers such as PgBouncer that do not keep named statements.
    Uncached,
}

/// Typed metadata of `state.postgresql` v1.
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    /// Parsed `connectionString` (libpq keyword/value or `postgres://` URL form).
    pub pg: tokio_postgres::Config,
    /// State table, optionally `schema.table`.
    pub table_name: String,
    /// Metadata table (migration level, last cleanup), optionally `schema.table`.
    pub metadata_table_name: String,
    /// Per-operation timeout (at least one second, as Dapr requires).
    pub timeout: Duration,
    /// Interval between expired-row sweeps; zero disables them.
    pub cleanup_interval: Duration,
    /// Pool size.
    pub max_conns: usize,
    /// Idle connections older than this are closed; `None` keeps them.
    pub connection_max_idle_time: Option<Duration>,
    /// Statement preparation mode.
    pub exec_mode: ExecMode,
}

impl PostgresConfig {
    /// Decodes and validates the component's metadata; errors name the key (the caller fills in
    /// the component's name).
    pub fn from_metadata(md: &mut ComponentMetadata) -> Result<Self, MetadataError> {
        let conn = md.required(&["connectionString", "url"])?;
        let pg = parse_connection_string(&conn).map_err(|reason| err("connectionString", reason))?;
        let table_name = md.string(&["tableName"]).unwrap_or_else(|| "state".into());
        let metadata_table_name = md.string(&["metadataTableName"]).unwrap_or_else(|| "dapr_metadata".into());
        for (key, name) in [("tableName", &table_name), ("metadataTableName", &metadata_table_name)] {
            if !valid_table_name(name) {
                return Err(err(key, format!("{name:?} is not a valid table name (identifier or schema.identifier)")));
            }
        }
        if table_name.eq_ignore_ascii_case(&metadata_table_name) {
            return Err(err("metadataTableName", "must differ from tableName"));
        }
        let timeout = md.duration(&["timeout", "timeoutInSeconds"], Duration::from_secs(20))?;
        if timeout < Duration::from_secs(1) {
            return Err(err("timeout", "must be at least 1s"));
        }
        let cleanup_interval = md.duration(&["cleanupInterval", "cleanupIntervalInSeconds"], Duration::from_secs(3600))?;
        let default_conns = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).max(4);
        let max_conns = match md.string(&["maxConns"]) {
            None => default_conns,
            Some(v) => match v.trim().parse::<i64>() {
                // Dapr: 0 or lower (and 1) keep the driver's default.
                Ok(n) if n > 1 => usize::try_from(n).unwrap_or(default_conns),
                Ok(_) => default_conns,
                Err(_) => return Err(err("maxConns", format!("{v:?} is not an integer"))),
            },
        };
        let idle = md.duration(&["connectionMaxIdleTime"], Duration::ZERO)?;
        let exec_mode = match md.string(&["queryExecMode"]).as_deref() {
            None | Some("cache_statement") | Some("cache_describe") => ExecMode::Cached,
            Some("describe_exec") | Some("exec") | Some("simple_protocol") => ExecMode::Uncached,
            Some(other) => {
                return Err(err(
                    "queryExecMode",
                    format!("{other:?} is not one of cache_statement, cache_describe, describe_exec, exec, simple_protocol"),
                ))
            }
        };
        for key in ["useAzureAD", "useAWSIAM"] {
            if md.bool(&[key], false)? {
                return Err(err(key, "is not supported by rapr (use a connection string with a password)"));
            }
        }
        Ok(Self {
            pg,
            table_name,
            metadata_table_name,
            timeout,
            cleanup_interval,
            max_conns,
            connection_max_idle_time: (!idle.is_zero()).then_some(idle),
            exec_mode,
        })
    }
}

fn err(key: &str, reason: impl Into<String>) -> MetadataError {
    MetadataError { component: String::new(), key: key.into(), reason: reason.into() }
}

/// Table names are interpolated into SQL, so only `identifier` or `schema.identifier` pass, each
/// part an unquoted PostgreSQL identifier of at most 63 bytes.
pub fn valid_table_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('.').collect();
    parts.len() <= 2 && parts.iter().all(|p| valid_identifier(p))
}

fn valid_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses a libpq-style connection string as pgx (Dapr's driver) accepts it: `database=` is
/// taken as `dbname=`, and the host defaults to localhost and the user to `$USER` as libpq's do.
/// The error never contains the string itself.
pub fn parse_connection_string(s: &str) -> Result<tokio_postgres::Config, String> {
    let s = s.trim();
    let normalised = if s.starts_with("postgres://") || s.starts_with("postgresql://") { s.to_string() } else { rename_database_key(s) };
    let mut cfg = tokio_postgres::Config::from_str(&normalised).map_err(|e| {
        let cause = std::error::Error::source(&e).map(|c| format!(": {c}")).unwrap_or_default();
        format!("the connection string does not parse{cause}")
    })?;
    if cfg.get_hosts().is_empty() && cfg.get_hostaddrs().is_empty() {
        cfg.host("localhost");
    }
    if cfg.get_user().is_none() {
        match std::env::var("USER") {
            Ok(user) if !user.is_empty() => {
                cfg.user(&user);
            }
            _ => return Err("the connection string names no user".into()),
        }
    }
    Ok(cfg)
}

/// Renames a `database` keyword (outside quoted values) to `dbname`.
fn rename_database_key(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let (mut in_quote, mut escaped, mut at_word_start) = (false, false, true);
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        if !in_quote && at_word_start && rest.starts_with("database") {
            let after = rest["database".len()..].trim_start();
            if after.starts_with('=') {
                out.push_str("dbname");
                rest = &rest["database".len()..];
                at_word_start = false;
                continue;
            }
        }
        out.push(c);
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '\'' {
            in_quote = !in_quote;
        }
        at_word_start = !in_quote && c.is_whitespace();
        rest = &rest[c.len_utf8()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(pairs: &[(&str, &str)]) -> ComponentMetadata {
        let p: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        ComponentMetadata::new("pg", &p)
    }

    #[test]
    fn defaults_follow_dapr() {
        let cfg = PostgresConfig::from_metadata(&mut md(&[("connectionString", "host=127.0.0.1 user=postgres database=test")])).unwrap();
        assert_eq!(cfg.table_name, "state");
        assert_eq!(cfg.metadata_table_name, "dapr_metadata");
        assert_eq!(cfg.timeout, Duration::from_secs(20));
        assert_eq!(cfg.cleanup_interval, Duration::from_secs(3600));
        assert_eq!(cfg.pg.get_dbname(), Some("test"));
        assert_eq!(cfg.exec_mode, ExecMode::Cached);
        let cfg = PostgresConfig::from_metadata(&mut md(&[("url", "postgres://postgres@127.0.0.1/test"), ("cleanupIntervalInSeconds", "-1")])).unwrap();
        assert!(cfg.cleanup_interval.is_zero());
    }

    #[test]
    fn table_names_are_identifiers_only() {
        assert!(valid_table_name("state"));
        assert!(valid_table_name("public.state_1"));
        for bad in ["x; DROP TABLE y", "a.b.c", "", "1abc", "a-b", "\"q\"", "a .b"] {
            assert!(!valid_table_name(bad), "{bad:?} accepted");
        }
        let e = PostgresConfig::from_metadata(&mut md(&[("connectionString", "host=x user=u"), ("tableName", "x; DROP TABLE y")])).unwrap_err();
        assert_eq!(e.key, "tableName");
    }

    #[test]
    fn bad_values_are_rejected_without_echoing_secrets() {
        let e = PostgresConfig::from_metadata(&mut md(&[("connectionString", "host=x password=s3cret bogus")])).unwrap_err();
        assert_eq!(e.key, "connectionString");
        assert!(!e.reason.contains("s3cret"), "{}", e.reason);
        assert!(PostgresConfig::from_metadata(&mut md(&[("connectionString", "host=x user=u"), ("timeout", "500ms")])).is_err());
        assert!(PostgresConfig::from_metadata(&mut md(&[("connectionString", "host=x user=u"), ("queryExecMode", "fast")])).is_err());
    }

    #[test]
    fn database_keyword_is_renamed_outside_quotes() {
        assert_eq!(rename_database_key("host=h database = d"), "host=h dbname = d");
        assert_eq!(rename_database_key("password='x database=y' database=z"), "password='x database=y' dbname=z");
    }
}
