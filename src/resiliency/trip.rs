//! The `trip` expression of a circuit breaker: when a failure in the closed state makes it true,
//! the breaker opens.
//!
//! daprd evaluates a CEL expression over the breaker's counters. rapr implements the subset that
//! resiliency files use: comparisons (`>`, `>=`, `<`, `<=`, `==`, `!=`) between counters and
//! integers, joined by `&&` and `||` (with `&&` binding tighter), parentheses and `true`/`false`.
//! Parsing happens at load, so a bad expression is a load error rather than a breaker that never
//! trips (daprd's breaker silently never trips when evaluation fails).

use std::fmt;

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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counter {
    Requests,
    TotalSuccesses,
    TotalFailures,
    ConsecutiveSuccesses,
    ConsecutiveFailures,
}

impl Counter {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "requests" => Counter::Requests,
            "totalSuccesses" => Counter::TotalSuccesses,
            "totalFailures" => Counter::TotalFailures,
            "consecutiveSuccesses" => Counter::ConsecutiveSuccesses,
            "consecutiveFailures" => Counter::ConsecutiveFailures,
            _ => return None,
        })
    }

    fn read(self, c: &Counts) -> i128 {
        i128::from(match self {
            Counter::Requests => c.requests,
            Counter::TotalSuccesses => c.total_successes,
            Counter::TotalFailures => c.total_failures,
            Counter::ConsecutiveSuccesses => c.consecutive_successes,
            Counter::ConsecutiveFailures => c.consecutive_failures,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operand {
    Counter(Counter),
    Int(i64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CmpOp {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Const(bool),
    Cmp(Operand, CmpOp, Operand),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
}

/// A parsed trip expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TripExpr {
    source: String,
    node: Node,
}

impl Default for TripExpr {
    /// daprd's breaker (gobreaker) trips on `consecutiveFailures > 5` when no `trip` is given.
    fn default() -> Self {
        Self {
            source: "consecutiveFailures > 5".into(),
            node: Node::Cmp(Operand::Counter(Counter::ConsecutiveFailures), CmpOp::Gt, Operand::Int(5)),
        }
    }
}

impl fmt::Display for TripExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl TripExpr {
    /// Parses an expression; the error says what is wrong and where.
    pub fn parse(source: &str) -> Result<Self, String> {
        let tokens = tokenize(source)?;
        let mut p = Parser { tokens, pos: 0 };
        let node = p.or()?;
        if let Some(t) = p.peek() {
            return Err(format!("unexpected {t} in trip expression {source:?}"));
        }
        Ok(Self { source: source.to_string(), node })
    }

    /// Whether the breaker should open with these counts.
    pub fn eval(&self, counts: &Counts) -> bool {
        eval(&self.node, counts)
    }
}

fn eval(node: &Node, c: &Counts) -> bool {
    let value = |o: &Operand| match o {
        Operand::Counter(k) => k.read(c),
        Operand::Int(i) => i128::from(*i),
    };
    match node {
        Node::Const(b) => *b,
        Node::And(a, b) => eval(a, c) && eval(b, c),
        Node::Or(a, b) => eval(a, c) || eval(b, c),
        Node::Cmp(l, op, r) => {
            let (l, r) = (value(l), value(r));
            match op {
                CmpOp::Gt => l > r,
                CmpOp::Ge => l >= r,
                CmpOp::Lt => l < r,
                CmpOp::Le => l <= r,
                CmpOp::Eq => l == r,
                CmpOp::Ne => l != r,
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    Int(i64),
    Op(CmpOp),
    And,
    Or,
    Open,
    Close,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Ident(s) => write!(f, "{s:?}"),
            Token::Int(i) => write!(f, "{i}"),
            Token::Op(op) => write!(f, "{op:?}"),
            Token::And => f.write_str("&&"),
            Token::Or => f.write_str("||"),
            Token::Open => f.write_str("("),
            Token::Close => f.write_str(")"),
        }
    }
}

fn tokenize(src: &str) -> Result<Vec<Token>, String> {
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let two = src.get(i..i + 2).unwrap_or("");
        let (token, len) = match (c, two) {
            (b' ' | b'\t' | b'\n' | b'\r', _) => {
                i += 1;
                continue;
            }
            (_, ">=") => (Token::Op(CmpOp::Ge), 2),
            (_, "<=") => (Token::Op(CmpOp::Le), 2),
            (_, "==") => (Token::Op(CmpOp::Eq), 2),
            (_, "!=") => (Token::Op(CmpOp::Ne), 2),
            (_, "&&") => (Token::And, 2),
            (_, "||") => (Token::Or, 2),
            (b'>', _) => (Token::Op(CmpOp::Gt), 1),
            (b'<', _) => (Token::Op(CmpOp::Lt), 1),
            (b'(', _) => (Token::Open, 1),
            (b')', _) => (Token::Close, 1),
            (b'0'..=b'9', _) => {
                let end = bytes[i..].iter().position(|b| !b.is_ascii_digit()).map_or(bytes.len(), |p| i + p);
                let n = src[i..end].parse::<i64>().map_err(|e| format!("number {} in trip expression {src:?}: {e}", &src[i..end]))?;
                (Token::Int(n), end - i)
            }
            (b'a'..=b'z' | b'A'..=b'Z' | b'_', _) => {
                let end = bytes[i..].iter().position(|b| !(b.is_ascii_alphanumeric() || *b == b'_')).map_or(bytes.len(), |p| i + p);
                (Token::Ident(src[i..end].to_string()), end - i)
            }
            _ => return Err(format!("unexpected character {:?} in trip expression {src:?}", &src[i..].chars().next().unwrap_or(' '))),
        };
        out.push(token);
        i += len;
    }
    if out.is_empty() {
        return Err("trip expression is empty".into());
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn or(&mut self) -> Result<Node, String> {
        let mut left = self.and()?;
        while self.peek() == Some(&Token::Or) {
            self.pos += 1;
            left = Node::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Node, String> {
        let mut left = self.term()?;
        while self.peek() == Some(&Token::And) {
            self.pos += 1;
            left = Node::And(Box::new(left), Box::new(self.term()?));
        }
        Ok(left)
    }

    fn term(&mut self) -> Result<Node, String> {
        match self.peek() {
            Some(Token::Open) => {
                self.pos += 1;
                let inner = self.or()?;
                match self.next() {
                    Some(Token::Close) => Ok(inner),
                    other => Err(format!("expected ) but found {}", describe(other))),
                }
            }
            Some(Token::Ident(s)) if s == "true" || s == "false" => {
                let b = s == "true";
                self.pos += 1;
                Ok(Node::Const(b))
            }
            _ => {
                let left = self.operand()?;
                let op = match self.next() {
                    Some(Token::Op(op)) => op,
                    other => return Err(format!("expected a comparison but found {}", describe(other))),
                };
                Ok(Node::Cmp(left, op, self.operand()?))
            }
        }
    }

    fn operand(&mut self) -> Result<Operand, String> {
        match self.next() {
            Some(Token::Int(i)) => Ok(Operand::Int(i)),
            Some(Token::Ident(name)) => Counter::from_name(&name).map(Operand::Counter).ok_or_else(|| {
                format!("unknown counter {name:?} (known: requests, totalSuccesses, totalFailures, consecutiveSuccesses, consecutiveFailures)")
            }),
            other => Err(format!("expected a counter or a number but found {}", describe(other))),
        }
    }
}

fn describe(t: Option<Token>) -> String {
    t.map_or_else(|| "the end".to_string(), |t| t.to_string())
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
        let e = TripExpr::parse("consecutiveFailures > 2").unwrap();
        assert!(!e.eval(&counts(2, 0, 0)));
        assert!(e.eval(&counts(3, 0, 0)));
        for (src, c, want) in [
            ("requests < 3", counts(0, 2, 0), true),
            ("requests <= 2", counts(0, 3, 0), false),
            ("totalFailures == 4", counts(0, 0, 4), true),
            ("totalFailures != 4", counts(0, 0, 4), false),
            ("3 < totalFailures", counts(0, 0, 4), true),
        ] {
            assert_eq!(TripExpr::parse(src).unwrap().eval(&c), want, "{src}");
        }
    }

    #[test]
    fn and_binds_tighter_than_or_and_parentheses_group() {
        let e = TripExpr::parse("requests >= 10 && totalFailures > 5 || consecutiveFailures > 3").unwrap();
        assert!(e.eval(&counts(4, 0, 0)), "right side of ||");
        assert!(e.eval(&counts(0, 10, 6)), "left side of ||");
        assert!(!e.eval(&counts(0, 10, 5)));
        let e = TripExpr::parse("requests >= 10 && (totalFailures > 5 || consecutiveFailures > 3)").unwrap();
        assert!(!e.eval(&counts(4, 0, 0)));
        assert!(e.eval(&counts(4, 10, 0)));
        assert!(TripExpr::parse("true").unwrap().eval(&Counts::default()));
        assert!(!TripExpr::parse("(false)").unwrap().eval(&Counts::default()));
    }

    #[test]
    fn bad_expressions_say_what_is_wrong() {
        for (src, want) in [
            ("", "empty"),
            ("consecutiveFailures", "expected a comparison"),
            ("failures > 3", "unknown counter \"failures\""),
            ("consecutiveFailures > ", "found the end"),
            ("consecutiveFailures => 3", "unexpected character"),
            ("consecutiveFailures > > 3", "expected a counter"),
            ("(requests > 1", "expected )"),
            ("requests > 1 requests", "unexpected"),
            ("requests > 1 & requests < 2", "unexpected character"),
        ] {
            let err = TripExpr::parse(src).unwrap_err();
            assert!(err.contains(want), "{src:?}: {err}");
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
