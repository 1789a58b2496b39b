//! `Routes`: a subscription's routing rules, compiled once, and the choice of the app path for
//! one event (issue 11 B.4).
//!
//! daprd (pkg/runtime/subscription `findMatchingRoute`, pkg/expr) binds one CEL variable,
//! `event`, to the CloudEvent decoded as a JSON map (so every JSON number is a float64), tries
//! the rules in order, and takes the first whose `match` is true; a rule with an empty `match`
//! always matches (the default route is kept last). No rule matching means "not for this app":
//! the caller drops the event (to the dead-letter topic if set). An expression that fails at
//! evaluation (a missing key, a result that is not a bool) is an error, not a miss: daprd sends
//! the message to the dead-letter topic if one is set and otherwise retries it, so `select`
//! returns that error for the caller to decide.
//!
//! Compiling here only parses (cel-rust has no type checker); daprd's checker declares every
//! unknown identifier as `dyn`, so it rejects little beyond syntax either way.

use std::collections::HashMap;
use std::sync::Arc;

use cel::objects::{Key, Map as CelMap};
use cel::{Context, Env, Program, Value};
use serde_json::Value as Json;

use super::Subscription;

/// A routing expression that failed, named so an operator can find it.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// The expression does not parse (declaration time).
    #[error("invalid CEL match expression `{expr}` (route {path}): {reason}")]
    Compile {
        /// The `match` text.
        expr: String,
        /// The rule's path.
        path: String,
        /// The parser's message.
        reason: String,
    },
    /// The expression failed on an event (daprd: "error finding matching route").
    #[error("CEL match expression `{expr}` failed on the event: {reason}")]
    Eval {
        /// The `match` text.
        expr: String,
        /// The interpreter's message.
        reason: String,
    },
}

/// One compiled rule.
struct CompiledRule {
    /// `None` for an empty `match` (always true).
    program: Option<Program>,
    /// The `match` text, for errors.
    expr: String,
    /// Where matching events go.
    path: String,
}

/// A subscription's rules, compiled; cheap to share (`Clone` copies an `Arc`).
#[derive(Clone)]
pub struct Routes(Arc<Inner>);

struct Inner {
    rules: Vec<CompiledRule>,
    /// CEL's standard functions, built once: building them per event costs more than most
    /// expressions do.
    env: Arc<Env>,
}

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.rules.iter().map(|r| (&r.expr, &r.path))).finish()
    }
}

impl Routes {
    /// Compiles every rule of `sub`; the first bad expression fails the whole subscription.
    pub fn compile(sub: &Subscription) -> Result<Routes, RouteError> {
        let mut rules = Vec::with_capacity(sub.rules.len());
        for rule in &sub.rules {
            let expr = rule.match_expr.trim();
            let program = if expr.is_empty() {
                None
            } else {
                Some(Program::compile(expr).map_err(|e| RouteError::Compile {
                    expr: rule.match_expr.clone(),
                    path: rule.path.clone(),
                    reason: e.to_string().replace('\n', "; "),
                })?)
            };
            rules.push(CompiledRule {
                program,
                expr: rule.match_expr.clone(),
                path: rule.path.clone(),
            });
        }
        Ok(Routes(Arc::new(Inner { rules, env: Arc::new(Env::stdlib()) })))
    }

    /// The path of the first rule `event` matches; `Ok(None)` when none does (the event is not
    /// for this subscription); `Err` when an expression fails on it.
    pub fn select(&self, event: &serde_json::Map<String, Json>) -> Result<Option<&str>, RouteError> {
        // Built lazily: an empty-match default route (the common case) needs no interpreter.
        let mut ctx: Option<Context<'_, '_>> = None;
        for rule in self.0.rules.iter() {
            let Some(program) = &rule.program else {
                return Ok(Some(&rule.path));
            };
            let ctx = ctx.get_or_insert_with(|| {
                let mut c = Context::with_env(Arc::clone(&self.0.env));
                c.add_variable_from_value("event", object_to_cel(event));
                c
            });
            match program.execute(ctx) {
                Ok(Value::Bool(true)) => return Ok(Some(&rule.path)),
                Ok(Value::Bool(false)) => continue,
                Ok(other) => {
                    return Err(RouteError::Eval {
                        expr: rule.expr.clone(),
                        reason: format!("the result is {:?}, not a boolean", other.type_of()),
                    });
                }
                Err(e) => {
                    return Err(RouteError::Eval { expr: rule.expr.clone(), reason: e.to_string() });
                }
            }
        }
        Ok(None)
    }

    /// Whether the subscription has any rule (one with none delivers nothing).
    pub fn is_empty(&self) -> bool {
        self.0.rules.is_empty()
    }
}

/// A JSON object as a CEL map with string keys.
fn object_to_cel(obj: &serde_json::Map<String, Json>) -> Value {
    let map: HashMap<Key, Value> =
        obj.iter().map(|(k, v)| (Key::String(Arc::new(k.clone())), json_to_cel(v))).collect();
    Value::Map(CelMap { map: Arc::new(map) })
}

/// A JSON value as CEL sees it in daprd: Go's `encoding/json` into `any` makes every number a
/// float64, so `event.data.n` is a double (CEL's `==` still matches `5` against `5.0`).
fn json_to_cel(v: &Json) -> Value {
    match v {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        // as_f64 is None only for arbitrary-precision numbers, which this crate does not enable.
        Json::Number(n) => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        Json::String(s) => Value::String(Arc::new(s.clone())),
        Json::Array(a) => Value::List(Arc::new(a.iter().map(json_to_cel).collect())),
        Json::Object(o) => object_to_cel(o),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::pubsub::{Rule, SubscriptionKind};

    fn sub(rules: &[(&str, &str)]) -> Subscription {
        let mut s = Subscription::new(SubscriptionKind::Declarative, "ps", "t", "/unused");
        s.rules = rules
            .iter()
            .map(|(m, p)| Rule { match_expr: m.to_string(), path: p.to_string() })
            .collect();
        s
    }

    fn event(v: Json) -> serde_json::Map<String, Json> {
        match v {
            Json::Object(m) => m,
            other => panic!("test events are objects, got {other}"),
        }
    }

    #[test]
    fn json_numbers_are_doubles_and_equal_integer_literals() {
        let routes = Routes::compile(&sub(&[("event.data.n == 5", "/five"), ("", "/other")]))
            .expect("compiles");
        let ev = event(json!({"type": "x", "data": {"n": 5}}));
        assert_eq!(routes.select(&ev), Ok(Some("/five")));
        let ev = event(json!({"type": "x", "data": {"n": 6}}));
        assert_eq!(routes.select(&ev), Ok(Some("/other")));
        // A double literal and a comparison both see the same float64.
        let routes = Routes::compile(&sub(&[("event.data.n > 4.5 && event.data.n < 5.5", "/f")]))
            .expect("compiles");
        assert_eq!(routes.select(&event(json!({"data": {"n": 5}}))), Ok(Some("/f")));
    }

    #[test]
    fn first_matching_rule_wins_in_order() {
        let routes = Routes::compile(&sub(&[
            ("event.type == 'widget'", "/widgets"),
            ("event.type.startsWith('wid')", "/wid"),
            ("", "/default"),
        ]))
        .expect("compiles");
        assert_eq!(routes.select(&event(json!({"type": "widget"}))), Ok(Some("/widgets")));
        assert_eq!(routes.select(&event(json!({"type": "widgetX"}))), Ok(Some("/wid")));
        assert_eq!(routes.select(&event(json!({"type": "gadget"}))), Ok(Some("/default")));
    }

    #[test]
    fn no_default_and_no_match_is_none() {
        let routes = Routes::compile(&sub(&[("event.type == 'a'", "/a")])).expect("compiles");
        assert_eq!(routes.select(&event(json!({"type": "b"}))), Ok(None));
        let none = Routes::compile(&sub(&[])).expect("compiles");
        assert!(none.is_empty());
        assert_eq!(none.select(&event(json!({}))), Ok(None));
    }

    #[test]
    fn evaluation_failures_are_errors_naming_the_expression() {
        let routes = Routes::compile(&sub(&[("event.data.missing == 1", "/a"), ("", "/d")]))
            .expect("compiles");
        match routes.select(&event(json!({"data": {}}))) {
            Err(RouteError::Eval { expr, .. }) => assert_eq!(expr, "event.data.missing == 1"),
            other => panic!("want an evaluation error, got {other:?}"),
        }
        let routes = Routes::compile(&sub(&[("event.type", "/a")])).expect("compiles");
        let err = routes.select(&event(json!({"type": "x"}))).expect_err("not a bool");
        assert!(err.to_string().contains("not a boolean"), "{err}");
        // An identifier other than `event` is unbound, as in daprd.
        let routes = Routes::compile(&sub(&[("other == 1", "/a")])).expect("compiles");
        assert!(routes.select(&event(json!({}))).is_err());
    }

    #[test]
    fn a_bad_expression_fails_compile_with_its_text() {
        let err = Routes::compile(&sub(&[("", "/d"), ("event.type ==", "/bad")]))
            .expect_err("does not parse");
        match &err {
            RouteError::Compile { expr, path, .. } => {
                assert_eq!(expr, "event.type ==");
                assert_eq!(path, "/bad");
            }
            other => panic!("want a compile error, got {other:?}"),
        }
        assert!(err.to_string().contains("event.type =="), "{err}");
    }

    #[test]
    fn has_macro_and_nested_lists_work() {
        let routes = Routes::compile(&sub(&[
            ("has(event.data.tags) && 'red' in event.data.tags", "/red"),
            ("", "/d"),
        ]))
        .expect("compiles");
        assert_eq!(
            routes.select(&event(json!({"data": {"tags": ["blue", "red"]}}))),
            Ok(Some("/red"))
        );
        assert_eq!(routes.select(&event(json!({"data": {}}))), Ok(Some("/d")));
    }

    #[test]
    fn routes_are_send_and_sync() {
        fn check<T: Send + Sync + 'static>() {}
        check::<Routes>();
    }
}
