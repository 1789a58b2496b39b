//! Durations as Dapr writes them: Go's `time.ParseDuration` syntax, plus the one thing the
//! readers differ in, what a bare integer means.
//!
//! Every duration rapr reads from YAML, metadata or flags goes through [`parse`], so a value
//! means the same wherever it appears. The readers daprd uses differ only in bare integers:
//! - dapr/kit's metadata decoder (components' `DecodeMetadata`) tries Go's syntax first and
//!   then a bare integer as seconds ([`BareInteger::Seconds`]);
//! - dapr/kit's config decoder (Resiliency retries and circuit breakers) and daprd's resiliency
//!   timeouts read a bare integer as milliseconds first ([`BareInteger::Milliseconds`]);
//! - contrib's Redis settings read a bare integer as milliseconds too;
//! - plain `time.ParseDuration` (e.g. `spec.initTimeout`, Go DSN parameters) refuses it
//!   ([`BareInteger::Rejected`]); `"0"` is still zero there, as in Go.
//!
//! Values are signed nanoseconds as Go's `time.Duration`: a negative duration means something
//! to some readers ("disabled"), so the caller decides what to do with it.
//! This module depends on nothing else in the crate so config and components can both use it.

use std::time::Duration;

/// What a bare integer (no unit) means to a reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BareInteger {
    /// Refused, as Go's `time.ParseDuration` does (except `"0"`).
    Rejected,
    /// Seconds, tried after Go's syntax (dapr/kit's metadata decoder).
    Seconds,
    /// Milliseconds (dapr/kit's config decoder, daprd's resiliency timeouts, contrib Redis).
    Milliseconds,
}

/// A duration that could not be parsed; the texts are Go's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Not a duration at all (or out of range).
    #[error("time: invalid duration {0:?}")]
    Invalid(String),
    /// A number without a unit.
    #[error("time: missing unit in duration {0:?}")]
    MissingUnit(String),
    /// A unit Go does not know.
    #[error("time: unknown unit {unit:?} in duration {input:?}")]
    UnknownUnit {
        /// The unit as written.
        unit: String,
        /// The whole input.
        input: String,
    },
}

/// A signed duration in nanoseconds, Go's `time.Duration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct GoDuration(pub i64);

impl GoDuration {
    /// Nanoseconds (negative allowed).
    pub fn nanos(self) -> i64 {
        self.0
    }

    /// Below zero.
    pub fn is_negative(self) -> bool {
        self.0 < 0
    }

    /// The duration when it is not negative.
    pub fn to_std(self) -> Option<Duration> {
        u64::try_from(self.0).ok().map(Duration::from_nanos)
    }

    /// The duration, with a negative one as zero (Dapr's "disabled" for timeouts and intervals).
    pub fn clamped(self) -> Duration {
        self.to_std().unwrap_or(Duration::ZERO)
    }
}

/// Parses `s` with Go's duration syntax, `bare` saying what a bare integer means.
/// Nothing is trimmed: Go refuses `" 5s"` and so does this.
pub fn parse(s: &str, bare: BareInteger) -> Result<GoDuration, DurationError> {
    match bare {
        BareInteger::Rejected => parse_go(s),
        // dapr/kit metadata: Go's syntax first, then `strconv.ParseInt` as seconds.
        BareInteger::Seconds => parse_go(s).or_else(|e| match go_int(s) {
            Some(secs) => secs.checked_mul(1_000_000_000).map(GoDuration).ok_or_else(|| DurationError::Invalid(s.to_string())),
            None => Err(e),
        }),
        // dapr/kit config and resiliency: `strconv.Atoi` as milliseconds first.
        BareInteger::Milliseconds => match go_int(s) {
            Some(ms) => ms.checked_mul(1_000_000).map(GoDuration).ok_or_else(|| DurationError::Invalid(s.to_string())),
            None => parse_go(s),
        },
    }
}

/// Parses `s` as a duration for a reader that cannot use a negative one: `None` if negative.
pub fn parse_std(s: &str, bare: BareInteger) -> Result<Option<Duration>, DurationError> {
    parse(s, bare).map(GoDuration::to_std)
}

/// A command-line duration (clap value parser): Go's syntax, a unit required, not negative.
pub fn flag_duration(s: &str) -> Result<Duration, String> {
    parse_std(s, BareInteger::Rejected).map_err(|e| e.to_string())?.ok_or_else(|| format!("{s:?} is negative"))
}

/// Go's `strconv.ParseInt(s, 10, 64)`: optional sign, ASCII digits only.
fn go_int(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Go's `time.ParseDuration`: `[-+]?(\d*(\.\d*)?unit)+`, or `"0"`; units ns, us, µs, μs, ms,
/// s, m, h. A fraction is scaled as Go does (in floating point, truncated), so results match to
/// the nanosecond.
pub fn parse_go(input: &str) -> Result<GoDuration, DurationError> {
    let invalid = || DurationError::Invalid(input.to_string());
    let (neg, mut rest) = match input.as_bytes().first() {
        Some(b'-') => (true, &input[1..]),
        Some(b'+') => (false, &input[1..]),
        _ => (false, input),
    };
    if rest == "0" {
        return Ok(GoDuration(0));
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    // Accumulated in u64 as Go does, so -9223372036854775808ns is representable.
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let first = rest.as_bytes()[0];
        if !(first == b'.' || first.is_ascii_digit()) {
            return Err(invalid());
        }
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &rest[..int_len];
        let mut value: u64 = 0;
        for b in int_part.bytes() {
            value = value.checked_mul(10).and_then(|v| v.checked_add(u64::from(b - b'0'))).filter(|v| *v <= 1 << 63).ok_or_else(invalid)?;
        }
        rest = &rest[int_len..];
        let (mut frac, mut scale, mut has_frac_digits) = (0u64, 1f64, false);
        if let Some(after_dot) = rest.strip_prefix('.') {
            let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
            has_frac_digits = frac_len > 0;
            let mut overflowed = false;
            for b in after_dot[..frac_len].bytes() {
                // As Go's leadingFraction: digits that would overflow are dropped.
                if overflowed {
                    continue;
                }
                match frac.checked_mul(10).and_then(|v| v.checked_add(u64::from(b - b'0'))).filter(|v| *v <= 1 << 63) {
                    Some(v) => {
                        frac = v;
                        scale *= 10.0;
                    }
                    None => overflowed = true,
                }
            }
            rest = &after_dot[frac_len..];
        }
        if int_len == 0 && !has_frac_digits {
            return Err(invalid());
        }
        let unit_len = rest.find(|c: char| c == '.' || c.is_ascii_digit()).unwrap_or(rest.len());
        if unit_len == 0 {
            return Err(DurationError::MissingUnit(input.to_string()));
        }
        let unit_name = &rest[..unit_len];
        let unit: u64 = match unit_name {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(DurationError::UnknownUnit { unit: unit_name.to_string(), input: input.to_string() }),
        };
        rest = &rest[unit_len..];
        let mut v = value.checked_mul(unit).filter(|v| *v <= 1 << 63).ok_or_else(invalid)?;
        if frac > 0 {
            // Go: v += uint64(float64(f) * (float64(unit) / scale)), truncating.
            v = v.checked_add((frac as f64 * (unit as f64 / scale)) as u64).filter(|v| *v <= 1 << 63).ok_or_else(invalid)?;
        }
        total = total.checked_add(v).filter(|v| *v <= 1 << 63).ok_or_else(invalid)?;
    }
    if neg {
        // 1 << 63 is exactly i64::MIN's magnitude.
        return Ok(GoDuration(0i64.wrapping_sub_unsigned(total)));
    }
    i64::try_from(total).map(GoDuration).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;
    const MS: i64 = 1_000_000;

    fn go(s: &str) -> Result<i64, DurationError> {
        parse_go(s).map(GoDuration::nanos)
    }

    #[test]
    fn go_syntax_as_time_parse_duration() {
        for (s, want) in [
            ("0", 0),
            ("+0", 0),
            ("-0", 0),
            ("5s", 5 * S),
            ("30s", 30 * S),
            ("1478s", 1478 * S),
            ("-5s", -5 * S),
            ("+5s", 5 * S),
            ("-0s", 0),
            ("5.0s", 5 * S),
            ("5.6s", 5 * S + 600 * MS),
            ("5.s", 5 * S),
            (".5s", 500 * MS),
            ("1.0s", S),
            ("1.00s", S),
            ("1.004s", S + 4 * MS),
            ("1.0040s", S + 4 * MS),
            ("100.00100s", 100 * S + MS),
            ("10ns", 10),
            ("11us", 11_000),
            ("12µs", 12_000),
            ("12μs", 12_000),
            ("13ms", 13 * MS),
            ("14s", 14 * S),
            ("15m", 15 * 60 * S),
            ("16h", 16 * 3600 * S),
            ("3h30m", (3 * 3600 + 30 * 60) * S),
            ("10.5s4m", 4 * 60 * S + 10 * S + 500 * MS),
            ("-2m3.4s", -(2 * 60 * S + 3 * S + 400 * MS)),
            ("1h2m3s4ms5us6ns", 3600 * S + 2 * 60 * S + 3 * S + 4 * MS + 5_000 + 6),
            ("39h9m14.425s", 39 * 3600 * S + 9 * 60 * S + 14 * S + 425 * MS),
            ("52763797000ns", 52_763_797_000),
            ("0.3333333333333333333h", 20 * 60 * S),
            ("9007199254740993ns", 9_007_199_254_740_993),
            ("9223372036854775807ns", i64::MAX),
            ("9223372036.854775807s", i64::MAX),
            ("-9223372036854775808ns", i64::MIN),
            ("-9223372036.854775808s", i64::MIN),
            ("0.100000000000000000000h", 6 * 60 * S),
            ("0.830103483285477580700h", 49 * 60 * S + 48 * S + 372_539_827),
        ] {
            assert_eq!(go(s), Ok(want), "{s}");
        }
    }

    #[test]
    fn go_refusals_with_go_messages() {
        for s in ["", "3", "-", "s", ".", "-.", ".s", "+.s", "1d", "5x", " 5s", "5s ", "1.2.3s", "-1s-2s", "9223372036854775808ns", "9223372036854775.808ms", "-9223372036854775809ns", "3000000h"] {
            assert!(go(s).is_err(), "{s:?} should be refused");
        }
        assert_eq!(parse_go("5").unwrap_err().to_string(), "time: missing unit in duration \"5\"");
        assert_eq!(parse_go("5x").unwrap_err().to_string(), "time: unknown unit \"x\" in duration \"5x\"");
        assert_eq!(parse_go("soon").unwrap_err().to_string(), "time: invalid duration \"soon\"");
    }

    #[test]
    fn bare_integers_per_reader() {
        let p = |s, b| parse(s, b).map(GoDuration::nanos);
        assert_eq!(p("10", BareInteger::Seconds), Ok(10 * S));
        assert_eq!(p("-1", BareInteger::Seconds), Ok(-S));
        assert_eq!(p("+3", BareInteger::Seconds), Ok(3 * S));
        assert_eq!(p("0", BareInteger::Seconds), Ok(0));
        assert_eq!(p("10", BareInteger::Milliseconds), Ok(10 * MS));
        assert_eq!(p("-1", BareInteger::Milliseconds), Ok(-MS));
        assert!(matches!(parse("10", BareInteger::Rejected), Err(DurationError::MissingUnit(_))));
        assert_eq!(p("0", BareInteger::Rejected), Ok(0));
        for b in [BareInteger::Rejected, BareInteger::Seconds, BareInteger::Milliseconds] {
            assert_eq!(p("1m", b), Ok(60 * S));
            assert_eq!(p("250ms", b), Ok(250 * MS));
            assert!(parse("1.5", b).is_err(), "1.5 has no unit");
            assert!(parse("ten", b).is_err());
            assert!(parse("", b).is_err());
        }
        // A bare integer whose seconds overflow is refused rather than wrapped as Go does.
        assert!(parse("9223372037", BareInteger::Seconds).is_err());
    }

    #[test]
    fn signed_to_std() {
        assert_eq!(parse_std("-5s", BareInteger::Rejected), Ok(None));
        assert_eq!(parse_std("1.5s", BareInteger::Rejected), Ok(Some(Duration::from_millis(1500))));
        assert_eq!(GoDuration(-1).clamped(), Duration::ZERO);
        assert!(GoDuration(-1).is_negative());
    }
}
