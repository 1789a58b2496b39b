//! The `path` and `method` labels of the HTTP metrics, chosen as daprd chooses them
//! (pkg/diagnostics/http_monitoring*.go):
//!
//! - `increasedCardinality` (daprd's "legacy" mode, on by default): the request path with its
//!   variable parts replaced: state and secret keys dropped, actor ids as `{id}`, workflow
//!   instance ids as `{instanceId}`, event names as `{eventName}`.
//! - `http.pathMatching`: the path is matched against the configured patterns (Go 1.22
//!   `ServeMux` syntax: literal segments, `{name}`, `{name...}`, `{$}`, a trailing `/` for a
//!   subtree), each also registered under `/v1.0/invoke/{app_id}/method`; the label is the most
//!   specific pattern that matches. Unmatched paths get an empty label, or the legacy label when
//!   increased cardinality is on.
//! - otherwise the label is present and empty, as daprd writes it.
//! - `http.excludeVerbs`: the method label is empty; an unknown verb is `UNKNOWN`.

/// Paths daprd always labels as they are.
const STATIC_PATHS: [&str; 4] = ["/dapr/config", "/dapr/metrics", "/dapr/subscribe", "/healthz"];

const VERBS: [&str; 9] = ["GET", "PUT", "POST", "PATCH", "DELETE", "HEAD", "OPTIONS", "CONNECT", "TRACE"];

/// Merges `//` and makes the path absolute.
pub fn clean(p: &str) -> String {
    let mut p = p.to_string();
    while p.contains("//") {
        p = p.replace("//", "/");
    }
    if !p.starts_with('/') {
        p.insert(0, '/');
    }
    p
}

/// The increased-cardinality label of `path`: keys, actor ids, workflow instance ids and event
/// names never become label values.
pub fn normalize_path(path: &str) -> String {
    if path.is_empty() {
        return String::new();
    }
    let path = clean(path);
    let mut parts: Vec<&str> = path[1..].splitn(6, '/').collect();
    if parts.len() < 3 {
        return path;
    }
    let join = |parts: &[&str]| format!("/{}", parts.join("/"));
    if parts[0] == "actors" {
        // App callbacks: `actors/<type>/<id>/method/<m>`.
        parts[2] = "{id}";
        return parts.join("/");
    }
    match parts[1] {
        "state" | "secrets" => join(&parts[..3]),
        "actors" if parts.len() >= 5 => {
            parts[3] = "{id}";
            join(&parts[..5])
        }
        "workflows" if parts.len() >= 4 => {
            if parts.len() == 4 {
                parts[3] = "{instanceId}";
                return join(&parts);
            }
            if parts.len() == 5 && parts[4].starts_with("start") {
                return format!("{}/start", join(&parts[..4]));
            }
            parts[3] = "{instanceId}";
            if parts.len() == 6 && parts[4] == "raiseEvent" && !parts[5].is_empty() {
                parts[5] = "{eventName}";
                return join(&parts);
            }
            join(&parts[..5])
        }
        _ => path,
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Lit(String),
    One,
    Rest,
}

#[derive(Debug, Clone)]
struct Pattern {
    text: String,
    segs: Vec<Seg>,
    /// Ends in `/` (a subtree) or `{x...}`: matches any longer path.
    subtree: bool,
}

impl Pattern {
    fn parse(text: &str) -> Self {
        let body = &text[1..];
        let mut segs: Vec<Seg> = body
            .split('/')
            .map(|s| match s {
                "{$}" => Seg::Lit(String::new()),
                s if s.starts_with('{') && s.ends_with("...}") => Seg::Rest,
                s if s.starts_with('{') && s.ends_with('}') => Seg::One,
                s => Seg::Lit(s.to_string()),
            })
            .collect();
        let subtree = if segs.last() == Some(&Seg::Rest) {
            true
        } else if text.ends_with('/') && !text.ends_with("{$}") {
            segs.pop();
            segs.push(Seg::Rest);
            true
        } else {
            false
        };
        if subtree {
            segs.pop();
        }
        Self { text: text.to_string(), segs, subtree }
    }

    /// Per path segment, how specifically it matched (2 literal, 1 wildcard, 0 subtree), or
    /// `None` when the pattern does not match.
    fn score(&self, path: &[&str]) -> Option<Vec<u8>> {
        if path.len() < self.segs.len() || (!self.subtree && path.len() != self.segs.len()) {
            return None;
        }
        let mut score = Vec::with_capacity(path.len());
        for (i, p) in path.iter().enumerate() {
            match self.segs.get(i) {
                Some(Seg::Lit(l)) if l == p => score.push(2),
                Some(Seg::Lit(_)) => return None,
                Some(Seg::One) => score.push(1),
                Some(Seg::Rest) | None => score.push(0),
            }
        }
        Some(score)
    }
}

/// The configured `http.pathMatching` patterns.
#[derive(Debug, Clone)]
pub struct PathMatcher {
    patterns: Vec<Pattern>,
    /// No `/` pattern and increased cardinality: unmatched paths keep their own path.
    raw_root: bool,
}

impl PathMatcher {
    /// From the configured patterns (`None` when there are none).
    pub fn new(paths: &[String], legacy: bool) -> Option<Self> {
        if paths.is_empty() {
            return None;
        }
        let mut all = Vec::with_capacity(paths.len() * 2);
        let mut root = false;
        for raw in paths {
            let p = clean(raw);
            root |= p == "/";
            if !p.starts_with("/v1.0/invoke/") {
                all.push(format!("/v1.0/invoke/{{app_id}}/method{p}"));
            }
            all.push(p);
        }
        all.sort();
        all.dedup();
        let raw_root = !root && legacy;
        Some(Self { patterns: all.iter().map(|p| Pattern::parse(p)).collect(), raw_root })
    }

    /// The most specific pattern matching `path`; `""` when none does.
    fn matched(&self, path: &str) -> String {
        let path = clean(path);
        let segs: Vec<&str> = path[1..].split('/').collect();
        let best = self.patterns.iter().filter_map(|p| p.score(&segs).map(|s| (s, p))).max_by(|a, b| a.0.cmp(&b.0));
        match best {
            Some((_, p)) => p.text.clone(),
            None if self.raw_root => path,
            None => String::new(),
        }
    }
}

/// How the HTTP metrics label requests.
#[derive(Debug, Clone, Default)]
pub struct HttpLabels {
    /// `increasedCardinality`.
    pub legacy: bool,
    /// `excludeVerbs`.
    pub exclude_verbs: bool,
    /// `pathMatching`.
    pub matcher: Option<PathMatcher>,
}

impl HttpLabels {
    /// The `method` label.
    pub fn method(&self, method: &str) -> String {
        if self.exclude_verbs {
            String::new()
        } else if VERBS.contains(&method) {
            method.to_string()
        } else {
            "UNKNOWN".into()
        }
    }

    /// The `path` label of a request the HTTP API served.
    pub fn server_path(&self, raw: &str) -> String {
        let path = if self.matcher.is_some() {
            clean(raw)
        } else if self.legacy {
            normalize_path(raw)
        } else {
            return String::new();
        };
        self.metrics_path(&path)
    }

    /// The `path` label of a call to the app (`path` is the method path).
    pub fn client_path(&self, path: &str) -> String {
        let p = self.metrics_path(path);
        if self.legacy || self.matcher.is_some() {
            normalize_path(&p)
        } else {
            p
        }
    }

    fn metrics_path(&self, path: &str) -> String {
        if STATIC_PATHS.contains(&path) {
            return path.to_string();
        }
        if let Some(m) = self.matcher.as_ref().filter(|_| !path.is_empty()) {
            let matched = m.matched(path);
            if !matched.is_empty() && (!self.legacy || matched != path) {
                return matched;
            }
            let normalized = normalize_path(path);
            if normalized != path {
                let again = m.matched(&normalized);
                if !again.is_empty() && again != "/" {
                    return again;
                }
            }
        }
        if self.legacy {
            normalize_path(path)
        } else {
            String::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_never_carry_keys() {
        assert_eq!(normalize_path("/v1.0/state/store/secret-key"), "/v1.0/state/store");
        assert_eq!(normalize_path("/v1.0/secrets/vault/name"), "/v1.0/secrets/vault");
        assert_eq!(normalize_path("/v1.0/actors/T/42/method/m"), "/v1.0/actors/T/{id}/method");
        assert_eq!(normalize_path("actors/T/42/method/m"), "actors/T/{id}/method/m");
        assert_eq!(normalize_path("/v1.0-beta1/workflows/dapr/abc"), "/v1.0-beta1/workflows/dapr/{instanceId}");
        assert_eq!(normalize_path("/v1.0-beta1/workflows/dapr/wf/start"), "/v1.0-beta1/workflows/dapr/wf/start");
        assert_eq!(normalize_path("/v1.0-beta1/workflows/dapr/abc/raiseEvent/ev"), "/v1.0-beta1/workflows/dapr/{instanceId}/raiseEvent/{eventName}");
        assert_eq!(normalize_path("/v1.0//healthz"), "/v1.0/healthz");
    }

    #[test]
    fn labels_by_mode() {
        let low = HttpLabels::default();
        assert_eq!(low.server_path("/v1.0/state/s/k"), "");
        assert_eq!(low.method("BREW"), "UNKNOWN");
        let legacy = HttpLabels { legacy: true, ..Default::default() };
        assert_eq!(legacy.server_path("/v1.0/state/s/k"), "/v1.0/state/s");
        assert_eq!(legacy.client_path("/orders/1"), "/orders/1");
        let no_verbs = HttpLabels { exclude_verbs: true, ..Default::default() };
        assert_eq!(no_verbs.method("GET"), "");
    }

    #[test]
    fn path_matching_takes_the_most_specific_pattern() {
        let pats = vec!["/orders/{id}".to_string(), "/orders/special".to_string(), "/files/".to_string()];
        let m = HttpLabels { matcher: PathMatcher::new(&pats, false), ..Default::default() };
        assert_eq!(m.server_path("/orders/12"), "/orders/{id}");
        assert_eq!(m.server_path("/orders/special"), "/orders/special");
        assert_eq!(m.server_path("/v1.0/invoke/app/method/orders/12"), "/v1.0/invoke/{app_id}/method/orders/{id}");
        assert_eq!(m.server_path("/files/a/b"), "/files/");
        assert_eq!(m.server_path("/v1.0/state/s/k"), "", "unmatched, low cardinality");
        let legacy = HttpLabels { legacy: true, matcher: PathMatcher::new(&pats, true), ..Default::default() };
        assert_eq!(legacy.server_path("/v1.0/state/s/k"), "/v1.0/state/s", "unmatched, increased cardinality");
        assert_eq!(legacy.server_path("/orders/12"), "/orders/{id}");
    }
}
