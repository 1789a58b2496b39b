//! `spec.tracing` of the `Configuration` resource, read as daprd reads it (`pkg/config`
//! `TracingSpec`, `SetTracingSpecFromEnv`): the sampling rate as a string with a default, the
//! OTLP exporter's settings with daprd's defaults, and the `OTEL_EXPORTER_OTLP_*` environment.
//! Kept apart from `configuration.rs` because the environment rules are tracing's alone.

use std::collections::BTreeMap;

use super::configuration::flag;

/// daprd's sampling rate when `samplingRate` is absent or not a number (one trace in 10,000;
/// `pkg/diagnostics/utils` `defaultSamplingRate`).
pub const DEFAULT_SAMPLING_RATE: f64 = 1e-4;

/// `spec.tracing` (its default, with no `tracing` section, samples at [`DEFAULT_SAMPLING_RATE`]
/// and exports nowhere, as daprd's).
#[derive(Debug, Clone, PartialEq)]
pub struct TracingSpec {
    /// `samplingRate` (0 to 1; absent or not a number: [`DEFAULT_SAMPLING_RATE`]). Exactly 0
    /// switches tracing off: no span, no trace header rewritten or added (daprd's
    /// `IsTracingEnabled`).
    pub sampling_rate: f64,
    /// Whether `samplingRate` was written (non-empty): an OTLP endpoint taken from the
    /// environment samples everything only when it was not.
    pub sampling_rate_set: bool,
    /// `stdout: true`: log every sampled span.
    pub stdout: bool,
    /// `otel`: the OTLP exporter.
    pub otel: Option<OtelSpec>,
    /// `zipkin.endpointAddress`: the Zipkin v2 collector URL spans are POSTed to.
    pub zipkin: Option<String>,
}

impl Default for TracingSpec {
    fn default() -> Self {
        Self { sampling_rate: DEFAULT_SAMPLING_RATE, sampling_rate_set: false, stdout: false, otel: None, zipkin: None }
    }
}

impl TracingSpec {
    /// daprd's `IsTracingEnabled`: only an explicit rate of 0 switches tracing off.
    pub fn enabled(&self) -> bool {
        self.sampling_rate != 0.0
    }
}

/// `spec.tracing.otel`.
#[derive(Debug, Clone, PartialEq)]
pub struct OtelSpec {
    /// `endpointAddress` (`host:port`, or a URL).
    pub endpoint: String,
    /// `isSecure`: TLS to the collector (default true, as daprd's `GetIsSecure`).
    pub is_secure: bool,
    /// `protocol`: `grpc` or `http` (OTLP/HTTP protobuf). daprd builds no OTLP exporter
    /// without one, whatever the endpoint.
    pub protocol: Option<String>,
    /// `headers`: sent with every export (`key=value` strings, or `name`/`value` pairs).
    pub headers: Vec<(String, String)>,
    /// `timeout` of one export (a Go duration such as `10s`; the OTLP default when absent).
    pub timeout: Option<std::time::Duration>,
}

impl Default for OtelSpec {
    fn default() -> Self {
        Self { endpoint: String::new(), is_secure: true, protocol: None, headers: Vec::new(), timeout: None }
    }
}

pub(super) fn tracing_spec(spec: &BTreeMap<String, yaml_serde::Value>) -> Result<TracingSpec, String> {
    let Some(t) = spec.get("tracing") else { return Ok(TracingSpec::default()) };
    // daprd keeps the rate as a string and parses it when building its sampler; what does not
    // parse (absent, empty, "abc") is its default rate, never an error.
    let raw = t.get("samplingRate").and_then(|v| v.as_f64().map(|f| f.to_string()).or_else(|| v.as_str().map(str::to_string)));
    let sampling_rate = raw.as_deref().and_then(|s| s.trim().parse::<f64>().ok()).filter(|f| !f.is_nan()).unwrap_or(DEFAULT_SAMPLING_RATE);
    let otel = match t.get("otel") {
        None => None,
        Some(o) => Some(otel_spec(o)?),
    };
    let zipkin = t.get("zipkin").and_then(|z| z.get("endpointAddress")).and_then(|v| v.as_str()).filter(|s| !s.is_empty()).map(str::to_string);
    Ok(TracingSpec {
        sampling_rate: sampling_rate.clamp(0.0, 1.0),
        sampling_rate_set: raw.is_some_and(|s| !s.is_empty()),
        stdout: flag(t.get("stdout"), "spec.tracing.stdout")?.unwrap_or(false),
        otel,
        zipkin,
    })
}

/// `spec.tracing.otel`. The protocol is checked as daprd checks it (exactly `grpc` or `http`,
/// else the sidecar does not start), only when there is an endpoint to export to.
fn otel_spec(o: &yaml_serde::Value) -> Result<OtelSpec, String> {
    let endpoint = o.get("endpointAddress").and_then(|v| v.as_str()).unwrap_or_default().to_string();
    let protocol = o.get("protocol").and_then(|v| v.as_str()).filter(|s| !s.is_empty()).map(str::to_string);
    if let Some(p) = &protocol {
        if !endpoint.is_empty() && p != "grpc" && p != "http" {
            return Err(format!("invalid protocol {p:?} provided for Otel endpoint (grpc or http)"));
        }
    }
    let is_secure = flag(o.get("isSecure"), "spec.tracing.otel.isSecure")?.unwrap_or(true);
    let mut headers = Vec::new();
    if let Some(list) = o.get("headers") {
        for h in list.as_sequence().ok_or("spec.tracing.otel.headers must be a list")? {
            // daprd's standalone form is `key=value`; its Kubernetes form a name/value pair.
            let pair = match (h.as_str(), h.get("name").and_then(|n| n.as_str())) {
                (Some(s), _) => s.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())),
                (None, Some(n)) => Some((n.to_string(), h.get("value").and_then(|v| v.as_str().map(str::to_string).or_else(|| v.as_f64().map(|f| f.to_string()))).unwrap_or_default())),
                _ => return Err("spec.tracing.otel.headers[] must be key=value strings or name/value pairs".into()),
            };
            headers.extend(pair);
        }
    }
    let timeout = match o.get("timeout") {
        None => None,
        Some(v) => {
            let s = v.as_str().ok_or("spec.tracing.otel.timeout must be a duration such as 10s")?;
            crate::config::duration::parse_std(s, crate::config::duration::BareInteger::Rejected).map_err(|e| format!("spec.tracing.otel.timeout: {e}"))?
        }
    };
    Ok(OtelSpec { endpoint, is_secure, protocol, headers, timeout })
}

/// daprd's `SetTracingSpecFromEnv`, with the OTLP variables the Go exporter itself reads: an
/// endpoint from `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (else `OTEL_EXPORTER_OTLP_ENDPOINT`) when
/// the Configuration names none (then sampling everything unless `samplingRate` is written),
/// its protocol from `OTEL_EXPORTER_OTLP[_TRACES]_PROTOCOL` (`http/...` is `http`, anything else
/// `grpc`), `OTEL_EXPORTER_OTLP[_TRACES]_INSECURE=true` or an `http://` endpoint for plaintext,
/// and `..._HEADERS` (`k=v,k2=v2`, values percent-decoded) and `..._TIMEOUT` (milliseconds)
/// when the Configuration sets none. `env` looks a variable up (the process environment).
pub fn tracing_from_env(t: &mut TracingSpec, env: impl Fn(&str) -> Option<String>) -> Result<(), String> {
    let var = |name: &str| env(&format!("OTEL_EXPORTER_OTLP_TRACES_{name}")).filter(|v| !v.is_empty()).or_else(|| env(&format!("OTEL_EXPORTER_OTLP_{name}")).filter(|v| !v.is_empty()));
    let otel = t.otel.get_or_insert_with(OtelSpec::default);
    if otel.endpoint.is_empty() {
        if let Some(endpoint) = var("ENDPOINT") {
            let plain = endpoint.starts_with("http://");
            otel.endpoint = endpoint.trim_start_matches("http://").trim_start_matches("https://").to_string();
            otel.protocol = Some(if var("PROTOCOL").is_some_and(|p| p.starts_with("http")) { "http" } else { "grpc" }.to_string());
            if plain {
                otel.is_secure = false;
            }
            if !t.sampling_rate_set {
                t.sampling_rate = 1.0;
            }
        }
    }
    if var("INSECURE").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        otel.is_secure = false;
    }
    if otel.headers.is_empty() {
        if let Some(h) = var("HEADERS") {
            for pair in h.split(',') {
                let (k, v) = pair.split_once('=').ok_or_else(|| format!("OTEL_EXPORTER_OTLP_HEADERS: missing '=' in {pair:?}"))?;
                let v = percent_encoding::percent_decode_str(v).decode_utf8().map_err(|e| format!("OTEL_EXPORTER_OTLP_HEADERS: {e}"))?;
                otel.headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
    }
    if otel.timeout.is_none() {
        if let Some(ms) = var("TIMEOUT") {
            let ms: u64 = ms.trim().parse().map_err(|_| format!("OTEL_EXPORTER_OTLP_TIMEOUT must be milliseconds, not {ms:?}"))?;
            if ms > 0 {
                otel.timeout = Some(std::time::Duration::from_millis(ms));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_rate_as_daprd_parses_it() {
        let rate = |yaml: &str| tracing_spec(&yaml_serde::from_str(yaml).unwrap()).unwrap().sampling_rate;
        assert_eq!(rate("tracing:\n  samplingRate: \"1\"\n"), 1.0);
        assert_eq!(rate("tracing:\n  samplingRate: 0\n"), 0.0);
        assert_eq!(rate("tracing:\n  zipkin:\n    endpointAddress: http://z:9411/api/v2/spans\n"), DEFAULT_SAMPLING_RATE, "absent");
        assert_eq!(rate("tracing:\n  samplingRate: \"\"\n"), DEFAULT_SAMPLING_RATE, "empty");
        assert_eq!(rate("tracing:\n  samplingRate: \"often\"\n"), DEFAULT_SAMPLING_RATE, "not a number");
    }

    fn tracing(yaml: &str) -> Result<TracingSpec, String> {
        tracing_spec(&yaml_serde::from_str(yaml).unwrap())
    }

    #[test]
    fn otel_as_daprd_reads_it() {
        let t = tracing("tracing:\n  otel:\n    endpointAddress: c:4317\n").unwrap();
        let o = t.otel.unwrap();
        assert!(o.is_secure, "isSecure defaults to true");
        assert_eq!(o.protocol, None, "no protocol: daprd builds no exporter");
        let t = tracing("tracing:\n  otel:\n    endpointAddress: c:4318\n    protocol: http\n    headers: [\"a=1\", \"b=x=y\", \"junk\"]\n    timeout: 2500ms\n").unwrap();
        let o = t.otel.unwrap();
        assert_eq!(o.headers, vec![("a".into(), "1".into()), ("b".into(), "x=y".into())], "key=value, the rest dropped as daprd's parseOtelHeaders");
        assert_eq!(o.timeout, Some(std::time::Duration::from_millis(2500)));
        let o = tracing("tracing:\n  otel:\n    endpointAddress: c:4318\n    protocol: grpc\n    headers:\n    - name: k\n      value: v\n").unwrap().otel.unwrap();
        assert_eq!(o.headers, vec![("k".into(), "v".into())]);
        assert!(tracing("tracing:\n  otel:\n    endpointAddress: c:4318\n    protocol: HTTP\n").is_err(), "daprd compares the protocol exactly");
        assert!(tracing("tracing:\n  otel:\n    endpointAddress: c:4318\n    protocol: grpc\n    timeout: soon\n").is_err());
        assert!(!tracing("tracing:\n  samplingRate: \"0\"\n").unwrap().enabled(), "0 switches tracing off");
        assert!(tracing("tracing:\n  samplingRate: \"x\"\n").unwrap().enabled());
    }

    #[test]
    fn otlp_environment_as_daprd_applies_it() {
        let env = |vars: &'static [(&'static str, &'static str)]| move |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string());
        // An endpoint from the environment: plaintext for http://, protocol from its variable,
        // everything sampled when the Configuration wrote no rate.
        let mut t = TracingSpec::default();
        tracing_from_env(&mut t, env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"), ("OTEL_EXPORTER_OTLP_HEADERS", "a=b%20c, d = e"), ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "1500")])).unwrap();
        let o = t.otel.clone().unwrap();
        assert_eq!((o.endpoint.as_str(), o.protocol.as_deref(), o.is_secure, t.sampling_rate), ("c:4318", Some("http"), false, 1.0));
        assert_eq!(o.headers, vec![("a".into(), "b c".into()), ("d".into(), "e".into())]);
        assert_eq!(o.timeout, Some(std::time::Duration::from_millis(1500)));
        // The TRACES_ variable wins; no scheme keeps TLS; a written rate stays.
        let mut t = tracing("tracing:\n  samplingRate: \"0.5\"\n").unwrap();
        tracing_from_env(&mut t, env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "a:1"), ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "b:2")])).unwrap();
        let o = t.otel.clone().unwrap();
        assert_eq!((o.endpoint.as_str(), o.protocol.as_deref(), o.is_secure, t.sampling_rate), ("b:2", Some("grpc"), true, 0.5));
        // The Configuration's endpoint and headers win over the environment's.
        let mut t = tracing("tracing:\n  otel:\n    endpointAddress: mine:4317\n    headers: [\"x=1\"]\n").unwrap();
        tracing_from_env(&mut t, env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:1"), ("OTEL_EXPORTER_OTLP_HEADERS", "y=2")])).unwrap();
        let o = t.otel.unwrap();
        assert_eq!((o.endpoint.as_str(), o.protocol, o.headers), ("mine:4317", None, vec![("x".to_string(), "1".to_string())]));
        assert!(tracing_from_env(&mut TracingSpec::default(), env(&[("OTEL_EXPORTER_OTLP_HEADERS", "novalue")])).is_err());
        assert!(tracing_from_env(&mut TracingSpec::default(), env(&[("OTEL_EXPORTER_OTLP_TIMEOUT", "5s")])).is_err(), "daprd: milliseconds only");
    }
}
