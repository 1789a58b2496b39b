//! The process's log lines, in daprd's shape (dapr/kit `logger`, logrus underneath), so that what
//! reads daprd's logs reads rapr's.
//!
//! - JSON (`--log-as-json`): one object per line with daprd's fields `time` (RFC 3339, UTC, ns),
//!   `level` (logrus's names: `debug`, `info`, `warning`, `error`), `msg`, `scope`, `type` (`log`),
//!   `app_id`, `instance` (the host name) and `ver`, then the event's own fields; keys sorted, as
//!   logrus writes them. A field named like one of daprd's is written as `fields.<name>`, as
//!   logrus does.
//! - Text (default): logrus's text layout, `time="…" level=info msg="…" app_id=… scope=…`, then
//!   the event's fields and those of the spans it happened in (a request's `trace_id`): the same
//!   words a daprd line has, without `instance`, `type` and `ver`, which repeat on every line.
//!
//! `app_id` is a field of every line of a sidecar: the one given at start (`rapr sidecar`), or
//! the `sidecar{app_id}` span every thread of a hosted sidecar runs in (`rapr run`, `rapr run -f`,
//! see `cli/sidecar_host.rs`), so several sidecars in one process still tell their lines apart.
//! `scope` is daprd's logger name for the subsystem, derived from the event's module path
//! ([`scope_of`]).
//!
//! ractor wraps every process in an `Actor{id name}` span. Those ids are rapr internals ("actor"
//! means something else to a Dapr user), so lines carry them only when debug logging is on, as
//! `process` (the name, else the id).

use std::collections::BTreeMap;
use std::fmt;

pub use super::log_sink::{level_of, set_other_threads_level, set_thread_sink, LineSink};
use super::log_sink::{thread_allows, write_line};
use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// daprd's fields: an event field of the same name is renamed `fields.<name>`.
const RESERVED: &[&str] = &["time", "level", "msg", "scope", "type", "app_id", "instance", "ver"];

/// Module path prefixes (after the crate name) and daprd's logger name for that subsystem;
/// the longest matching prefix wins.
const SCOPES: &[(&str, &str)] = &[
    ("api::http::api_log", "dapr.runtime.http-info"),
    ("api::grpc::api_log", "dapr.runtime.grpc.api-info"),
    ("api::http", "dapr.runtime.http"),
    ("api::grpc", "dapr.runtime.grpc.api"),
    ("api", "dapr.runtime"),
    ("invoke::internal", "dapr.runtime.grpc.internal"),
    ("invoke::app_health", "dapr.apphealth"),
    ("invoke::app_channel", "dapr.runtime.channels"),
    ("invoke", "dapr.runtime.direct_messaging"),
    ("components::state::client", "dapr.runtime.processor.state"),
    ("components::state", "dapr.contrib"),
    ("components::secretstores::client", "dapr.runtime.processor.secret"),
    ("components::secret_refs", "dapr.runtime.processor.secret"),
    ("components::secretstores", "dapr.contrib"),
    ("components", "dapr.runtime.processor"),
    ("config", "dapr.runtime.loader.disk"),
    ("resiliency", "dapr.runtime.resiliency"),
    ("runtime::telemetry", "dapr.runtime.trace"),
    ("runtime::span_attrs", "dapr.runtime.trace"),
    ("runtime::zipkin", "dapr.runtime.trace"),
    ("trace", "dapr.runtime.trace"),
    ("runtime::metrics", "dapr.runtime.diagnostics"),
    ("runtime", "dapr.runtime"),
    ("cli", "rapr.cli"),
    ("bench", "rapr.bench"),
];

/// daprd's scope for an event of `target` (a module path such as `rapr::api::http::state`).
/// Other crates' events keep their crate name (`h2`, `ractor`).
pub fn scope_of(target: &str) -> String {
    let Some(rest) = target.strip_prefix("rapr::").or_else(|| (target == "rapr").then_some("")) else {
        return target.split("::").next().unwrap_or(target).to_string();
    };
    SCOPES
        .iter()
        .filter(|(prefix, _)| rest == *prefix || rest.strip_prefix(prefix).is_some_and(|r| r.starts_with("::")))
        .max_by_key(|(prefix, _)| prefix.len())
        .map_or("dapr.runtime", |(_, scope)| scope)
        .to_string()
}

/// logrus's level names.
fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "trace",
        Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warning",
        Level::ERROR => "error",
    }
}

/// Fields recorded from an event or span, in order.
#[derive(Default)]
struct Fields {
    message: Option<String>,
    values: Vec<(String, Value)>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        let name = field.name();
        if name == "message" {
            self.message = Some(match value {
                Value::String(s) => s,
                other => other.to_string(),
            });
        } else if !name.starts_with("log.") {
            // `log.*` are the `log` crate's metadata, carried by tracing-log: not fields.
            self.values.retain(|(k, _)| k != name);
            self.values.push((name.to_string(), value));
        }
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_string()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }
}

/// A span's fields, kept in its extensions.
struct SpanFields(Vec<(String, Value)>);

/// The layer writing daprd-shaped lines to stderr, or to `--log-file`.
pub struct DaprLog {
    json: bool,
    show_processes: bool,
    app_id: Option<String>,
    instance: String,
    file: Option<std::fs::File>,
}

impl DaprLog {
    /// Lines as JSON or text; `show_processes` when debug logging is on; `app_id` for lines
    /// outside any `sidecar` span (the one sidecar of `rapr sidecar`).
    pub fn new(json: bool, show_processes: bool, app_id: Option<String>) -> Self {
        let instance = nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default();
        Self { json, show_processes, app_id: app_id.filter(|a| !a.is_empty()), instance, file: None }
    }

    /// One line (without its newline) for an event.
    fn line(&self, level: &Level, target: &str, event: Fields, app_id: Option<&str>, context: Vec<(String, Value)>) -> String {
        let time = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        let scope = scope_of(target);
        let msg = event.message.unwrap_or_default();
        let rest = event.values.into_iter().chain(context);
        if self.json {
            let mut m: BTreeMap<String, Value> = BTreeMap::new();
            for (k, v) in rest {
                let k = if RESERVED.contains(&k.as_str()) { format!("fields.{k}") } else { k };
                m.entry(k).or_insert(v);
            }
            m.insert("time".into(), time.into());
            m.insert("level".into(), level_name(level).into());
            m.insert("msg".into(), msg.into());
            m.insert("scope".into(), scope.into());
            m.insert("type".into(), "log".into());
            m.insert("instance".into(), self.instance.clone().into());
            m.insert("ver".into(), crate::api::metadata::RUNTIME_VERSION.into());
            if let Some(a) = app_id {
                m.insert("app_id".into(), a.into());
            }
            serde_json::to_string(&m).unwrap_or_default()
        } else {
            let mut out = format!("time={} level={} msg={}", quoted(&time), level_name(level), quoted(&msg));
            if let Some(a) = app_id {
                out.push_str(&format!(" app_id={}", quoted(a)));
            }
            out.push_str(&format!(" scope={}", quoted(&scope)));
            for (k, v) in rest {
                let v = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                out.push_str(&format!(" {k}={}", quoted(&v)));
            }
            out
        }
    }
}

/// logrus's text quoting: bare when every character is in `[A-Za-z0-9-._/@^+]`, else quoted.
fn quoted(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-._/@^+".contains(c)) {
        s.to_string()
    } else {
        format!("{s:?}")
    }
}

impl<S> Layer<S> for DaprLog
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut f = Fields::default();
        attrs.record(&mut f);
        span.extensions_mut().insert(SpanFields(f.values));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut f = Fields::default();
        values.record(&mut f);
        let mut ext = span.extensions_mut();
        if let Some(SpanFields(kept)) = ext.get_mut::<SpanFields>() {
            for (k, v) in f.values {
                kept.retain(|(x, _)| *x != k);
                kept.push((k, v));
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if !thread_allows(event.metadata().level()) {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        // An event from the `log` crate names its real target in `log.target`.
        let mut target = event.metadata().target().to_string();
        if target == "log" {
            struct LogTarget(Option<String>);
            impl Visit for LogTarget {
                fn record_str(&mut self, field: &Field, value: &str) {
                    if field.name() == "log.target" {
                        self.0 = Some(value.to_string());
                    }
                }
                fn record_debug(&mut self, _: &Field, _: &dyn fmt::Debug) {}
            }
            let mut t = LogTarget(None);
            event.record(&mut t);
            target = t.0.unwrap_or(target);
        }
        let mut app_id = self.app_id.clone();
        let mut context = Vec::new();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                let ext = span.extensions();
                let Some(SpanFields(values)) = ext.get::<SpanFields>() else { continue };
                let meta = span.metadata();
                if meta.name() == "sidecar" && meta.target().starts_with("rapr") {
                    app_id = values.iter().find(|(k, _)| k == "app_id").map(|(_, v)| v.as_str().map_or_else(|| v.to_string(), str::to_string)).or(app_id);
                } else if meta.name() == "Actor" && meta.target().starts_with("ractor") {
                    if self.show_processes {
                        let named = values.iter().find(|(k, _)| k == "name").filter(|(_, v)| v.as_str().is_some_and(|s| !s.is_empty() && s != "None"));
                        let id = values.iter().find(|(k, _)| k == "id");
                        if let Some((_, v)) = named.or(id) {
                            context.retain(|(k, _): &(String, Value)| k != "process");
                            context.push(("process".to_string(), v.clone()));
                        }
                    }
                } else {
                    for (k, v) in values {
                        context.retain(|(x, _): &(String, Value)| x != k);
                        context.push((k.clone(), v.clone()));
                    }
                }
            }
        }
        // An `app_id` field (a span's or the event's own, e.g. a `rapr run` line about one of its
        // sidecars) is the line's app id, never a second field.
        for (k, v) in context.iter().chain(fields.values.iter()) {
            if k == "app_id" {
                app_id = Some(v.as_str().map_or_else(|| v.to_string(), str::to_string));
            }
        }
        context.retain(|(k, _)| k != "app_id");
        fields.values.retain(|(k, _)| k != "app_id");
        let mut line = self.line(event.metadata().level(), &target, fields, app_id.as_deref(), context);
        line.push('\n');
        // `--log-file` (one write per line, appended: lines never interleave); else the thread's
        // sink (a `rapr run -f` sidecar's own destination) or stderr.
        match &self.file {
            Some(f) => {
                let _ = std::io::Write::write_all(&mut &*f, line.as_bytes());
            }
            None => write_line(line.as_bytes()),
        }
    }
}

/// Installs the process's logging: `level` (daprd's names; `RAPR_LOG` overrides with an
/// `EnvFilter` directive), JSON or text, `app_id` for lines outside a hosted sidecar's span.
pub fn init(level: &str, json: bool, app_id: Option<&str>) {
    let _ = init_to(level, json, app_id, None);
}

/// [`init`], writing to `file` (daprd's `--log-file`: created if missing, appended to) when
/// given. A file that cannot be opened is an error, as daprd then does not start.
pub fn init_to(level: &str, json: bool, app_id: Option<&str>, file: Option<&std::path::Path>) -> Result<(), String> {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    // daprd's levels; tracing has no "fatal".
    let level = if level.eq_ignore_ascii_case("fatal") { "error" } else { level };
    let filter = tracing_subscriber::EnvFilter::try_from_env("RAPR_LOG")
        // daprd's API loggers (`--enable-api-logging`) write at info whatever the level.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{level},h2=warn,hyper=warn,tower=warn,openraft=warn,ractor_cluster=warn,rapr::api::http::api_log=info,rapr::api::grpc::api_log=info")));
    let debug = filter.max_level_hint().is_some_and(|l| l >= tracing::level_filters::LevelFilter::DEBUG);
    let mut layer = DaprLog::new(json, debug, app_id.map(str::to_string));
    if let Some(path) = file {
        let f = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| format!("failed to open log file {:?}: {e}", path.display()))?;
        layer.file = Some(f);
    }
    let _ = tracing_subscriber::registry().with(filter).with(layer).try_init();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_as_daprd_names_its_loggers() {
        assert_eq!(scope_of("rapr::api::http::state"), "dapr.runtime.http");
        assert_eq!(scope_of("rapr::api::grpc"), "dapr.runtime.grpc.api");
        assert_eq!(scope_of("rapr::invoke::internal"), "dapr.runtime.grpc.internal");
        assert_eq!(scope_of("rapr::components::state::redis"), "dapr.contrib");
        assert_eq!(scope_of("rapr::components::state::client"), "dapr.runtime.processor.state");
        assert_eq!(scope_of("rapr::components::host"), "dapr.runtime.processor");
        assert_eq!(scope_of("rapr::runtime::root"), "dapr.runtime");
        assert_eq!(scope_of("rapr::runtime::metrics::http"), "dapr.runtime.diagnostics");
        assert_eq!(scope_of("rapr::invocation"), "dapr.runtime", "a prefix only matches whole segments");
        assert_eq!(scope_of("rapr"), "dapr.runtime");
        assert_eq!(scope_of("h2::proto"), "h2");
    }

    #[test]
    fn text_quotes_as_logrus() {
        assert_eq!(quoted("dapr.runtime"), "dapr.runtime");
        assert_eq!(quoted("two words"), "\"two words\"");
        assert_eq!(quoted(""), "\"\"");
        assert_eq!(quoted("a\"b"), "\"a\\\"b\"");
    }

    #[test]
    fn json_lines_carry_daprds_fields() {
        let log = DaprLog::new(true, false, None);
        let f = Fields { message: Some("hello".into()), values: vec![("scope".into(), "mine".into()), ("port".into(), 3500.into())] };
        let line = log.line(&Level::WARN, "rapr::runtime::root", f, Some("orders"), vec![("trace_id".into(), "ab".into())]);
        let v: Value = serde_json::from_str(&line).unwrap();
        for (k, want) in [("level", "warning"), ("msg", "hello"), ("scope", "dapr.runtime"), ("type", "log"), ("app_id", "orders"), ("fields.scope", "mine"), ("trace_id", "ab")] {
            assert_eq!(v[k], want, "{k} in {line}");
        }
        assert_eq!(v["port"], 3500);
        assert!(v["time"].as_str().unwrap().ends_with('Z') && v["ver"].is_string() && v["instance"].is_string(), "{line}");
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert!(keys.windows(2).all(|w| w[0] <= w[1]), "sorted as logrus: {keys:?}");
    }
}
