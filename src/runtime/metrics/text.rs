//! The text exposition as daprd serves it. daprd's OpenCensus views go out through Go's
//! Prometheus client, which differs from the Rust crate's writer in ways scrapers and dashboards
//! see: numbers are Go's shortest `%g` (`le="1"`, `le="1.048576e+06"`, not `le="1.0"`), labels are
//! sorted by name (`le` last), a `_total` counter's `# TYPE` carries its full name, and a family
//! with no sample is not written at all. The Configuration's `metric.rules` (regex rewriting of
//! label values) are applied here too: a rewritten series merges with any series that now has the
//! same labels, which is what daprd's record-time rewriting gives for counts and histograms.
//!
//! This pass runs on a scrape only; recording never pays for it.

use std::collections::HashMap;

/// One `metric.rules[].labels[]` entry: regex rewrites of a label of one family.
#[derive(Debug, Clone)]
pub struct LabelRule {
    /// The family, as [`family_key`] spells it.
    family: String,
    /// The label name.
    label: String,
    /// `(regex, replacement)`, applied in order; the replacement may use `$1`/`${name}`.
    rewrites: Vec<(regex::Regex, String)>,
}

impl LabelRule {
    /// A rule for `label` of metric `name` (`dapr_http_server_request_count` or the view name
    /// `http/server/request_count`, as daprd accepts both). `regex` maps a replacement to the
    /// pattern it replaces, as daprd's YAML does. A pattern that does not compile is an error.
    pub fn new(name: &str, label: &str, regex: &[(String, String)]) -> Result<Self, String> {
        let mut rewrites = Vec::with_capacity(regex.len());
        for (replace, pattern) in regex {
            let re = regex::Regex::new(pattern).map_err(|e| format!("failed to compile regex for rule {name}/{label}: {e}"))?;
            rewrites.push((re, replace.clone()));
        }
        Ok(Self { family: family_key(name), label: label.to_string(), rewrites })
    }
}

/// daprd's rule lookup key: the name without its first `dapr_`, `_` and `/` alike.
fn family_key(name: &str) -> String {
    name.replacen("dapr_", "", 1).replace('_', "/")
}

/// Go's `strconv.FormatFloat(f, 'g', -1, 64)` with the Prometheus client's special cases.
pub fn go_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    if f == 0.0 {
        return "0".into();
    }
    let e = format!("{f:e}");
    let (mantissa, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    // Go switches to the exponent form below 1e-4 and from 1e6 on (precision 6 for shortest).
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    } else {
        format!("{f}")
    }
}

/// A parsed sample line.
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

fn parse_sample(line: &str) -> Option<Sample> {
    let (head, value) = line.rsplit_once(' ')?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    let Some((name, rest)) = head.split_once('{') else { return Some(Sample { name: head.to_string(), labels: Vec::new(), value }) };
    let mut labels = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() || chars.next() != Some('"') {
            break;
        }
        let mut val = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => val.push('\n'),
                    Some(o) => val.push(o),
                    None => break,
                },
                '"' => break,
                o => val.push(o),
            }
        }
        labels.push((key.trim_start_matches(',').to_string(), val));
        if chars.peek() == Some(&',') {
            chars.next();
        }
        if chars.peek() == Some(&'}') || chars.peek().is_none() {
            break;
        }
    }
    Some(Sample { name: name.to_string(), labels, value })
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// One family's lines while it is being read.
#[derive(Default)]
struct FamilyBuf {
    meta: Vec<String>,
    /// The family's exposed name.
    name: String,
    /// Its rule lookup key.
    key: String,
    /// Sample series in first-seen order, merged by name and labels.
    series: Vec<(String, f64)>,
    index: HashMap<String, usize>,
    gauge: bool,
}

impl FamilyBuf {
    fn flush(&mut self, out: &mut String) {
        if !self.series.is_empty() {
            for m in &self.meta {
                out.push_str(m);
                out.push('\n');
            }
            for (head, v) in &self.series {
                out.push_str(head);
                out.push(' ');
                out.push_str(&go_float(*v));
                out.push('\n');
            }
        }
        *self = FamilyBuf::default();
    }

    fn add(&mut self, mut s: Sample, rules: &[LabelRule]) {
        for r in rules.iter().filter(|r| r.family == self.key) {
            if let Some((_, v)) = s.labels.iter_mut().find(|(k, v)| *k == r.label && !v.is_empty()) {
                for (re, replace) in &r.rewrites {
                    *v = re.replace_all(v, replace.as_str()).into_owned();
                }
            }
        }
        // Go's client sorts labels by name; the histogram's `le` comes last.
        s.labels.sort_by(|a, b| (a.0 == "le").cmp(&(b.0 == "le")).then_with(|| a.0.cmp(&b.0)));
        let mut head = s.name;
        if !s.labels.is_empty() {
            head.push('{');
            for (i, (k, v)) in s.labels.iter().enumerate() {
                if i > 0 {
                    head.push(',');
                }
                let v = if k == "le" { v.parse::<f64>().map(go_float).unwrap_or_else(|_| v.clone()) } else { v.clone() };
                head.push_str(&format!("{k}=\"{}\"", escape(&v)));
            }
            head.push('}');
        }
        match self.index.get(&head) {
            // A gauge keeps the last value (daprd's LastValue views); counts and buckets add up.
            Some(&i) if self.gauge => self.series[i].1 = s.value,
            Some(&i) => self.series[i].1 += s.value,
            None => {
                self.index.insert(head.clone(), self.series.len());
                self.series.push((head, s.value));
            }
        }
    }
}

/// Rewrites the crate's exposition as daprd's; `totals` are the counters whose daprd name ends
/// in `_total` (the crate writes their family name without it).
pub fn daprd_exposition(text: &str, totals: &[&str], rules: &[LabelRule]) -> String {
    let mut out = String::with_capacity(text.len() + 256);
    let mut fam = FamilyBuf::default();
    for line in text.lines() {
        if line == "# EOF" || line.is_empty() {
            continue;
        }
        let meta = line.strip_prefix("# TYPE ").map(|r| ("# TYPE ", r)).or_else(|| line.strip_prefix("# HELP ").map(|r| ("# HELP ", r)));
        if let Some((kind, rest)) = meta {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            let suffix = if totals.contains(&name) { "_total" } else { "" };
            let full = format!("{name}{suffix}");
            if full != fam.name {
                fam.flush(&mut out);
                fam.key = family_key(&full);
                fam.name = full.clone();
            }
            if kind == "# TYPE " {
                fam.gauge = tail == "gauge";
            }
            // The crate ends every help text with a full stop; daprd's are written as given.
            let tail = if kind == "# HELP " { tail.strip_suffix('.').unwrap_or(tail) } else { tail };
            fam.meta.push(format!("{kind}{full} {tail}"));
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        if let Some(s) = parse_sample(line) {
            fam.add(s, rules);
        }
    }
    fam.flush(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_as_go_writes_them() {
        assert_eq!(go_float(1.0), "1");
        assert_eq!(go_float(100000.0), "100000");
        assert_eq!(go_float(1048576.0), "1.048576e+06");
        assert_eq!(go_float(4294967296.0), "4.294967296e+09");
        assert_eq!(go_float(0.5), "0.5");
        assert_eq!(go_float(0.0001), "0.0001");
        assert_eq!(go_float(0.00001), "1e-05");
        assert_eq!(go_float(f64::INFINITY), "+Inf");
        assert_eq!(go_float(0.0), "0");
    }

    #[test]
    fn sorts_labels_formats_buckets_drops_empty_families_and_rewrites() {
        let text = "# HELP dapr_x_count X.\n# TYPE dapr_x_count counter\ndapr_x_count{status=\"200\",app_id=\"a\",path=\"/v1.0/users/1\"} 1\n\
dapr_x_count{status=\"200\",app_id=\"a\",path=\"/v1.0/users/2\"} 2\n# HELP dapr_empty E.\n# TYPE dapr_empty counter\n\
# HELP dapr_h H.\n# TYPE dapr_h histogram\ndapr_h_bucket{app_id=\"a\",le=\"1.0\"} 3\ndapr_h_sum{app_id=\"a\"} 4.0\n# HELP dapr_t T.\n# TYPE dapr_t counter\ndapr_t_total{b=\"q\\\"\",a=\"\"} 1\n# EOF\n";
        let rule = LabelRule::new("dapr_x_count", "path", &[("/v1.0/users/{id}".into(), "/v1.0/users/[0-9]+".into())]).unwrap();
        let out = daprd_exposition(text, &["dapr_t"], &[rule]);
        assert!(out.contains("dapr_x_count{app_id=\"a\",path=\"/v1.0/users/{id}\",status=\"200\"} 3\n"), "{out}");
        assert!(!out.contains("dapr_empty"), "{out}");
        assert!(out.contains("dapr_h_bucket{app_id=\"a\",le=\"1\"} 3\n") && out.contains("dapr_h_sum{app_id=\"a\"} 4\n"), "{out}");
        assert!(out.contains("# TYPE dapr_t_total counter\ndapr_t_total{a=\"\",b=\"q\\\"\"} 1\n"), "{out}");
        assert!(!out.contains("# EOF"));
        assert!(LabelRule::new("x", "y", &[("a".into(), "(".into())]).is_err());
    }
}
