//! The trace context on the wire, in the two forms daprd reads and writes: W3C `traceparent` /
//! `tracestate` headers and gRPC's binary `grpc-trace-bin` (OpenCensus' format, daprd's
//! `pkg/diagnostics/utils` `BinaryFromSpanContext` / `SpanContextFromBinary`): version 0, then
//! field 0 with the 16-byte trace id, field 1 with the 8-byte span id, field 2 with the flags.
//!
//! On a gRPC request daprd prefers `grpc-trace-bin` and falls back to `traceparent` (what
//! OpenTelemetry SDKs send); it sends both to the next hop.

use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

/// The gRPC binary trace context header.
pub const GRPC_TRACE_BIN: &str = "grpc-trace-bin";

/// `sc` in the binary format (29 bytes); `None` for an invalid context.
pub fn to_binary(sc: &SpanContext) -> Option<[u8; 29]> {
    if !sc.is_valid() {
        return None;
    }
    let mut b = [0u8; 29];
    b[2..18].copy_from_slice(&sc.trace_id().to_bytes());
    b[18] = 1;
    b[19..27].copy_from_slice(&sc.span_id().to_bytes());
    b[27] = 2;
    b[28] = sc.trace_flags().to_u8();
    Some(b)
}

/// The remote span context in `b`, as daprd reads it: the version and the trace id are
/// required, the span id and flags optional (then zero); anything else is no context.
pub fn from_binary(b: &[u8]) -> Option<SpanContext> {
    let (&version, mut rest) = b.split_first()?;
    if version != 0 || rest.len() < 17 || rest[0] != 0 {
        return None;
    }
    let trace_id = TraceId::from_bytes(rest[1..17].try_into().ok()?);
    rest = &rest[17..];
    let mut span_id = SpanId::INVALID;
    if rest.len() >= 9 && rest[0] == 1 {
        span_id = SpanId::from_bytes(rest[1..9].try_into().ok()?);
        rest = &rest[9..];
    }
    let mut flags = TraceFlags::default();
    if rest.len() >= 2 && rest[0] == 2 {
        flags = TraceFlags::new(rest[1]);
    }
    let sc = SpanContext::new(trace_id, span_id, flags, true, TraceState::default());
    sc.is_valid().then_some(sc)
}

/// `sc` as a W3C `traceparent` value.
pub fn traceparent(sc: &SpanContext) -> String {
    // The buffer holds ASCII only.
    String::from_utf8_lossy(&traceparent_bytes(sc, sc.trace_flags().to_u8())).into_owned()
}

/// `sc` as a `traceparent` header value with `flags`. Every request writes one or two, so the
/// hex is written by hand into a buffer: `format!` with `{:032x}` cost ~2,000 instructions a call.
pub fn traceparent_header(sc: &SpanContext, flags: u8) -> http::HeaderValue {
    let b = traceparent_bytes(sc, flags);
    // Invariant: `traceparent_bytes` writes only hex digits and '-', all valid in a header value.
    http::HeaderValue::from_bytes(&b).expect("a traceparent is visible ASCII")
}

/// `00-<trace id>-<span id>-<flags>`, lowercase hex, 55 bytes.
fn traceparent_bytes(sc: &SpanContext, flags: u8) -> [u8; 55] {
    let mut b = [b'-'; 55];
    b[..2].copy_from_slice(b"00");
    write_hex(&mut b[3..35], &sc.trace_id().to_bytes());
    write_hex(&mut b[36..52], &sc.span_id().to_bytes());
    write_hex(&mut b[53..55], &[flags]);
    b
}

fn write_hex(out: &mut [u8], bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (pair, x) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(x >> 4)];
        pair[1] = HEX[usize::from(x & 15)];
    }
}

/// `N` bytes from `2N` hex digits (either case); `None` on anything else.
fn read_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.as_bytes();
    if s.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        *o = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// The span context of a W3C `traceparent` value (version 00 layout), if valid.
pub fn parse_traceparent(v: &str) -> Option<SpanContext> {
    let mut parts = v.trim().split('-');
    let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2 || version == "ff" || trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
        return None;
    }
    let sc = SpanContext::new(
        TraceId::from_bytes(read_hex::<16>(trace)?),
        SpanId::from_bytes(read_hex::<8>(span)?),
        TraceFlags::new(read_hex::<1>(flags)?[0] & 1),
        true,
        TraceState::default(),
    );
    sc.is_valid().then_some(sc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_round_trip_as_daprd_lays_it_out() {
        let sc = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        let b = to_binary(&sc).unwrap();
        assert_eq!(&b[..2], &[0, 0]);
        assert_eq!(b[18], 1);
        assert_eq!(&b[27..], &[2, 1]);
        let back = from_binary(&b).unwrap();
        assert_eq!(traceparent(&back), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert!(from_binary(&[1, 0]).is_none(), "unknown version");
        assert!(from_binary(&b[..10]).is_none(), "no trace id");
        assert!(to_binary(&SpanContext::empty_context()).is_none());
        assert!(parse_traceparent("00-xyz-00f067aa0ba902b7-01").is_none());
    }

    #[test]
    fn traceparent_written_and_read_by_hand_as_the_formatter_did() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let sc = parse_traceparent(tp).unwrap();
        assert_eq!(traceparent(&sc), tp);
        assert_eq!(traceparent(&sc), format!("00-{}-{}-{:02x}", sc.trace_id(), sc.span_id(), sc.trace_flags().to_u8()));
        assert_eq!(traceparent_header(&sc, 0).to_str().unwrap(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
        let upper = parse_traceparent("00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-03").unwrap();
        assert_eq!(traceparent(&upper), tp, "either case read; only the sampled flag kept");
        for bad in ["00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01", "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x"] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
        assert!(parse_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none(), "an all-zero id is invalid");
    }
}
