//! The `trip` expression of a circuit breaker: when a failure in the closed state makes it true,
//! the breaker opens.
//!
//! As daprd (pkg/resiliency/breaker, pkg/expr), the expression is CEL, evaluated with the
//! breaker's counters bound as integers: `requests`, `totalSuccesses`, `totalFailures`,
//! `consecutiveSuccesses`, `consecutiveFailures`. Any valid CEL is accepted (through the `cel`
//! crate, the interpreter the pub/sub routing rules use). A syntax error is a load error, as
//! daprd's decoding fails the resource. An evaluation that errs (an unknown variable, a type
//! mismatch) or gives a non-boolean never trips the breaker, as daprd's; rapr also warns at load
//! when an expression names a variable that is not one of the counters, since such a breaker
//! would silently never trip.

use std::fmt;
use std::sync::Arc;

use cel::{Context, Env, Program, Value};

/// The counters a trip expression reads, as the breaker keeps them for its current generation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Calls admitted.
    pub requests: u64,
    /// Calls that succeeded.
    pub total_successes: u64,
    /// Calls that failed.
    pub total_failures: u64,
    /// Successes since the last failure.
    pub consecutive_successes: u64,
    /// Failures since the last success.
    pub consecutive_failures: u64,
}

impl Counts {
    /// Records a success.
    pub fn on_success(&mut self) {
        self.total_successes += 1;
        self.consecutive_successes += 1;
        self.consecutive_failures = 0;
    }

    /// Records a failure.
    pub fn on_failure(&mut self) {
        self.total_failures += 1;
        self.consecutive_failures += 1;
        self.consecutive_successes = 0;
    }

    /// The variables daprd binds, by name.
    fn variables(&self) -> [(&'static str, u64); 5] {
        [
            ("requests", self.requests),
            ("totalSuccesses", self.total_successes),
            ("totalFailures", self.total_failures),
            ("consecutiveSuccesses", self.consecutive_successes),
            ("consecutiveFailures", self.consecutive_failures),
        ]
    }
}

/// The variable names a trip expression may read.
pub const VARIABLES: [&str; 5] = ["requests", "totalSuccesses", "totalFailures", "consecutiveSuccesses", "consecutiveFailures"];

/// A parsed trip expression. Cheap to clone (the program is shared).
#[derive(Clone)]
pub struct TripExpr {
    source: String,
    program: Arc<Program>,
    /// CEL's standard functions, built once per expression rather than per evaluation.
    env: Arc<Env>,
}

impl fmt::Debug for TripExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TripExpr").field(&self.source).finish()
    }
}

impl PartialEq for TripExpr {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for TripExpr {}

impl Default for TripExpr {
    /// daprd's breaker (gobreaker) trips on `consecutiveFailures > 5` when no `trip` is given.
    fn default() -> Self {
        // The literal is valid CEL; a test below parses it.
        Self::parse("consecutiveFailures > 5").unwrap_or_else(|e| unreachable!("the default trip expression parses: {e}"))
    }
}

impl fmt::Display for TripExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl TripExpr {
    /// Parses a CEL expression; the error is the parser's.
    pub fn parse(source: &str) -> Result<Self, String> {
        if source.trim().is_empty() {
            return Err("trip expression is empty".into());
        }
        let program = Program::compile(source).map_err(|e| format!("invalid CEL expression {source:?}: {}", e.to_string().replace('\n', "; ")))?;
        Ok(Self { source: source.to_string(), program: Arc::new(program), env: Arc::new(Env::stdlib()) })
    }

    /// Variables the expression reads that the breaker does not bind (it can then never trip
    /// on them).
    pub fn unknown_variables(&self) -> Vec<String> {
        let refs = self.program.references();
        let mut out: Vec<String> = refs.variables().into_iter().filter(|v| !VARIABLES.contains(v)).map(str::to_string).collect();
        out.sort();
        out.dedup();
        out
    }

    /// Whether the breaker should open with these counts: the expression is `true`. An error or
    /// a non-boolean result is `false`, as in daprd.
    pub fn eval(&self, counts: &Counts) -> bool {
        let mut ctx = Context::with_env(Arc::clone(&self.env));
        for (name, value) in counts.variables() {
            ctx.add_variable_from_value(name, Value::Int(i64::try_from(value).unwrap_or(i64::MAX)));
        }
        match self.program.execute(&ctx) {
            Ok(Value::Bool(b)) => b,
            Ok(other) => {
                tracing::debug!(trip = %self.source, result = ?other.type_of(), "trip expression is not a boolean; not tripping");
                false
            }
            Err(e) => {
                tracing::debug!(trip = %self.source, error = %e, "trip expression failed; not tripping");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(consecutive_failures: u64, requests: u64, total_failures: u64) -> Counts {
        Counts { requests, total_failures, consecutive_failures, ..Default::default() }
    }

    #[test]
    fn comparisons_over_counters() {
        let e = TripExpr::parse("consecutiveFailures >= 5").unwrap();
        assert!(!e.eval(&counts(4, 0, 0)));
        assert!(e.eval(&counts(5, 0, 0)));
        for (src, c, want) in [
            ("requests < 3", counts(0, 2, 0), true),
            ("requests <= 2", counts(0, 3, 0), false),
            ("totalFailures == 4", counts(0, 0, 4), true),
            ("totalFailures != 4", counts(0, 0, 4), false),
            ("3 < totalFailures", counts(0, 0, 4), true),
            ("requests >= 10 && totalFailures > 5 || consecutiveFailures > 3", counts(4, 0, 0), true),
            ("requests >= 10 && (totalFailures > 5 || consecutiveFailures > 3)", counts(4, 0, 0), false),
            ("true", Counts::default(), true),
            ("(false)", Counts::default(), false),
        ] {
            assert_eq!(TripExpr::parse(src).unwrap().eval(&c), want, "{src}");
        }
    }

    #[test]
    fn any_valid_cel_works() {
        for (src, c, want) in [
            // A failure ratio over a minimum volume: arithmetic and a conditional.
            ("requests >= 4 && totalFailures * 2 >= requests", counts(1, 4, 2), true),
            ("requests >= 4 && totalFailures * 2 >= requests", counts(1, 4, 1), false),
            ("double(totalFailures) / double(requests) > 0.5", counts(0, 4, 3), true),
            ("consecutiveFailures > 2 ? true : totalFailures > 10", counts(3, 0, 0), true),
            ("!(consecutiveFailures < 3)", counts(3, 0, 0), true),
            ("[consecutiveFailures, totalFailures].exists(x, x > 6)", counts(0, 0, 7), true),
            ("consecutiveFailures in [2, 4]", counts(4, 0, 0), true),
        ] {
            assert_eq!(TripExpr::parse(src).unwrap().eval(&c), want, "{src}");
        }
    }

    #[test]
    fn errors_and_non_booleans_never_trip() {
        let unknown = TripExpr::parse("failures > 3").unwrap();
        assert!(!unknown.eval(&counts(10, 10, 10)), "an unbound variable is an evaluation error");
        assert_eq!(unknown.unknown_variables(), vec!["failures".to_string()]);
        assert!(TripExpr::parse("consecutiveFailures > 1").unwrap().unknown_variables().is_empty());
        assert!(!TripExpr::parse("consecutiveFailures + 1").unwrap().eval(&counts(10, 0, 0)), "an integer is not a verdict");
        assert!(!TripExpr::parse("consecutiveFailures > 'x'").unwrap().eval(&counts(10, 0, 0)));
    }

    #[test]
    fn syntax_errors_are_load_errors() {
        for src in ["", "   ", "consecutiveFailures >", "consecutiveFailures => 3", "(requests > 1", "requests > 1 requests"] {
            assert!(TripExpr::parse(src).is_err(), "{src:?} should not parse");
        }
    }

    #[test]
    fn default_is_gobreakers() {
        let e = TripExpr::default();
        assert!(!e.eval(&counts(5, 0, 0)));
        assert!(e.eval(&counts(6, 0, 0)));
        assert_eq!(e.to_string(), "consecutiveFailures > 5");
    }
}
