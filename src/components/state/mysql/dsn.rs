//! Parsing of the Go MySQL driver's DSN (`user:password@tcp(host:port)/dbname?param=value`), the
//! form Dapr's `connectionString` takes, into `mysql_async` options.
//!
//! Written here because no crate reads this form: the rules follow go-sql-driver/mysql's
//! documented ones (last `/` ends the address part, last `@` ends the credentials, `tcp(...)` or
//! `unix(...)`, default `127.0.0.1:3306`, unknown parameters become session variables).

use std::time::Duration;

use mysql_async::OptsBuilder;
use percent_encoding::percent_decode_str;

/// Driver parameters that change nothing for rapr (Go-specific, or rapr's fixed choice).
const IGNORED_PARAMS: &[&str] = &[
    "allownativepasswords",
    "allowoldpasswords",
    "allowfallbacktoplaintext",
    "charset",
    "collation",
    "parsetime",
    "loc",
    "interpolateparams",
    "columnswithalias",
    "clientfoundrows",
    "multistatements",
    "rejectreadonly",
    "checkconnliveness",
    "readtimeout",
    "writetimeout",
    "serverpubkey",
    "compress",
    "timetruncate",
    "connectionattributes",
];

/// A Go-style DSN, parsed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GoDsn {
    /// User name (empty when absent).
    pub user: String,
    /// Password, if one was given.
    pub password: Option<String>,
    /// `tcp` or `unix`.
    pub net: String,
    /// Host name or IP (tcp).
    pub host: String,
    /// Port (tcp).
    pub port: u16,
    /// Socket path (unix).
    pub socket: Option<String>,
    /// Database named in the DSN (Dapr's store uses `schemaName` instead).
    pub db_name: Option<String>,
    /// The `tls` parameter, if set to anything that asks for TLS.
    pub tls: Option<String>,
    /// Dial timeout (`timeout` parameter).
    pub dial_timeout: Option<Duration>,
    /// `allowCleartextPasswords=true`.
    pub cleartext: bool,
    /// `maxAllowedPacket` parameter.
    pub max_allowed_packet: Option<usize>,
    /// Unknown parameters, sent as `SET name=value` on each new connection (as the Go driver does).
    pub session_vars: Vec<(String, String)>,
}

/// Parses `dsn`; the error says what is wrong without echoing the password.
pub fn parse(dsn: &str) -> Result<GoDsn, String> {
    let dsn = dsn.trim();
    let slash = dsn.rfind('/').ok_or("missing the slash separating the database name (expected user:password@tcp(host:port)/)")?;
    let (head, tail) = (&dsn[..slash], &dsn[slash + 1..]);
    let mut out = GoDsn { net: "tcp".into(), host: "127.0.0.1".into(), port: 3306, ..Default::default() };

    let net_part = match head.rfind('@') {
        Some(at) => {
            let creds = &head[..at];
            match creds.split_once(':') {
                Some((u, p)) => {
                    out.user = u.to_string();
                    out.password = Some(p.to_string());
                }
                None => out.user = creds.to_string(),
            }
            &head[at + 1..]
        }
        None => head,
    };
    if !net_part.is_empty() {
        let (net, addr) = match net_part.find('(') {
            Some(open) => {
                let addr = net_part[open + 1..].strip_suffix(')').ok_or("network address not terminated (missing closing parenthesis)")?;
                (&net_part[..open], addr)
            }
            None => (net_part, ""),
        };
        match net {
            "tcp" | "tcp4" | "tcp6" => {
                if !addr.is_empty() {
                    let (host, port) = split_host_port(addr)?;
                    out.host = host;
                    out.port = port;
                }
            }
            "unix" => {
                out.net = "unix".into();
                out.socket = Some(if addr.is_empty() { "/tmp/mysql.sock".into() } else { addr.to_string() });
            }
            other => return Err(format!("unsupported network {other:?} (use tcp or unix)")),
        }
    }

    let (db, query) = tail.split_once('?').unwrap_or((tail, ""));
    if !db.is_empty() {
        out.db_name = Some(decode(db)?);
    }
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').ok_or_else(|| format!("invalid parameter {pair:?} (expected name=value)"))?;
        let v = decode(v)?;
        apply_param(&mut out, k, v)?;
    }
    Ok(out)
}

fn apply_param(out: &mut GoDsn, k: &str, v: String) -> Result<(), String> {
    let lower = k.to_ascii_lowercase();
    match lower.as_str() {
        "tls" => {
            if !matches!(v.to_ascii_lowercase().as_str(), "false" | "0" | "preferred" | "") {
                out.tls = Some(v);
            }
        }
        "timeout" => {
            // go-sql-driver reads it with time.ParseDuration (no bare integers); zero or less
            // sets no dial deadline of its own, so the component's timeout applies.
            let d = crate::config::duration::parse(&v, crate::config::duration::BareInteger::Rejected).map_err(|e| format!("parameter timeout: {e}"))?;
            out.dial_timeout = d.to_std().filter(|d| !d.is_zero());
        }
        "allowcleartextpasswords" => out.cleartext = matches!(v.as_str(), "true" | "1"),
        "maxallowedpacket" => {
            let n: usize = v.parse().map_err(|_| format!("parameter maxAllowedPacket: {v:?} is not a number"))?;
            out.max_allowed_packet = (n > 0).then_some(n);
        }
        _ if IGNORED_PARAMS.contains(&lower.as_str()) => {}
        _ => {
            if !super::config::valid_identifier(k) {
                return Err(format!("invalid parameter name {k:?}"));
            }
            out.session_vars.push((k.to_string(), v));
        }
    }
    Ok(())
}

fn split_host_port(addr: &str) -> Result<(String, u16), String> {
    let parse_port = |p: &str| p.parse::<u16>().map_err(|_| format!("invalid port {p:?} in address {addr:?}"));
    if let Some(rest) = addr.strip_prefix('[') {
        // IPv6 literal: [::1]:3306 or [::1]
        let (host, after) = rest.split_once(']').ok_or_else(|| format!("unterminated IPv6 address {addr:?}"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => parse_port(p)?,
            None if after.is_empty() => 3306,
            None => return Err(format!("invalid address {addr:?}")),
        };
        return Ok((host.to_string(), port));
    }
    match addr.rsplit_once(':') {
        Some((host, p)) if !host.contains(':') => Ok((host.to_string(), parse_port(p)?)),
        Some(_) => Ok((addr.to_string(), 3306)),
        None => Ok((addr.to_string(), 3306)),
    }
}

fn decode(s: &str) -> Result<String, String> {
    percent_decode_str(s).decode_utf8().map(|c| c.into_owned()).map_err(|_| format!("{s:?} is not valid percent-encoded UTF-8"))
}

impl GoDsn {
    /// Connection options for database `db` (`None`: no default database).
    pub fn opts(&self, db: Option<&str>) -> OptsBuilder {
        let mut b = OptsBuilder::default()
            .user((!self.user.is_empty()).then(|| self.user.clone()))
            .pass(self.password.clone())
            .db_name(db.map(str::to_string))
            .enable_cleartext_plugin(self.cleartext)
            .max_allowed_packet(self.max_allowed_packet)
            .init(self.session_vars.iter().map(|(k, v)| format!("SET {k}={v}")).collect::<Vec<_>>());
        match &self.socket {
            Some(path) => b = b.socket(Some(path.clone())).prefer_socket(true),
            None => b = b.ip_or_hostname(self.host.clone()).tcp_port(self.port).prefer_socket(false),
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_daprs_documented_form() {
        let d = parse("root:@tcp(127.0.0.1:3306)/?allowNativePasswords=true").unwrap();
        assert_eq!((d.user.as_str(), d.password.as_deref(), d.host.as_str(), d.port), ("root", Some(""), "127.0.0.1", 3306));
        assert_eq!(d.db_name, None);
        assert!(d.session_vars.is_empty() && d.tls.is_none());
    }

    #[test]
    fn passwords_may_hold_at_and_colon_and_hosts_default() {
        let d = parse("me:p@ss:w0rd@tcp(db.example)/app?tls=custom&sql_mode=%27ANSI%27").unwrap();
        assert_eq!(d.password.as_deref(), Some("p@ss:w0rd"));
        assert_eq!((d.host.as_str(), d.port), ("db.example", 3306));
        assert_eq!(d.db_name.as_deref(), Some("app"));
        assert_eq!(d.tls.as_deref(), Some("custom"));
        assert_eq!(d.session_vars, vec![("sql_mode".to_string(), "'ANSI'".to_string())]);
        let d = parse("/").unwrap();
        assert_eq!((d.user.as_str(), d.host.as_str(), d.port), ("", "127.0.0.1", 3306));
        let d = parse("u@tcp([::1]:3307)/").unwrap();
        assert_eq!((d.host.as_str(), d.port), ("::1", 3307));
        let d = parse("u@unix(/run/mysqld/mysqld.sock)/?timeout=5s").unwrap();
        assert_eq!(d.socket.as_deref(), Some("/run/mysqld/mysqld.sock"));
        assert_eq!(d.dial_timeout, Some(Duration::from_secs(5)));
    }

    #[test]
    fn malformed_dsns_are_errors() {
        assert!(parse("not a dsn").is_err());
        assert!(parse("u:p@tcp(127.0.0.1:3306/").is_err());
        assert!(parse("u:p@tcp(127.0.0.1:99999)/").is_err());
        assert!(parse("u:p@udp(127.0.0.1)/").is_err());
        assert!(parse("u:p@tcp(h)/?x").is_err());
        assert!(parse("u:p@tcp(h)/?a;b=1").is_err());
    }
}
