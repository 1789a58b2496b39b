//! The invoked method's name, normalised at the edge of service invocation as daprd's
//! `NormalizeMethod` does (pkg/messaging/method): `#`, `?`, NUL and control characters are
//! refused, path traversal is resolved with Go's `path.Clean`, and leading `../` are stripped, so
//! the app, access control and resiliency all see one canonical name.
//!
//! HTTP callers' methods are percent-decoded first (daprd reads the decoded `URL.Path`), which is
//! why a decoded name is encoded again for the app's URL (`encode_for_path`).

use percent_encoding::{AsciiSet, CONTROLS};

/// Why a method name was refused, worded as daprd's errors (Go's `%q` quoting).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MethodError {
    /// `#`, `?` or NUL.
    #[error("method contains forbidden character: {}", go_quote(.0))]
    Forbidden(String),
    /// A control character (0x01-0x1f, 0x7f) at a byte position.
    #[error("method contains control character at position {pos}: {}", go_quote(.method))]
    Control { pos: usize, method: String },
}

/// daprd's `NormalizeMethod`.
pub fn normalize(method: &str) -> Result<String, MethodError> {
    if method.contains(['#', '?', '\0']) {
        return Err(MethodError::Forbidden(method.to_string()));
    }
    if let Some(pos) = method.bytes().position(|b| b < 0x20 || b == 0x7f) {
        return Err(MethodError::Control { pos, method: method.to_string() });
    }
    let mut cleaned = clean(method);
    while let Some(rest) = cleaned.strip_prefix("../") {
        cleaned = rest.to_string();
    }
    if cleaned == ".." || cleaned == "." {
        cleaned.clear();
    }
    Ok(cleaned)
}

/// Go's `path.Clean`: one slash between elements, `.` removed, `..` resolved lexically (kept at
/// the start of a relative path), no trailing slash, `.` for an empty result.
pub fn clean(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let rooted = p.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => match out.last() {
                Some(&last) if last != ".." => {
                    out.pop();
                }
                _ if rooted => {}
                _ => out.push(".."),
            },
            other => out.push(other),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

/// What a decoded method must have encoded again to be a URL path (the query and fragment
/// markers, `%`, spaces and the characters a URI never holds raw).
const PATH: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'#').add(b'%').add(b'<').add(b'>').add(b'?').add(b'`').add(b'{').add(b'}').add(b'^').add(b'|').add(b'\\');

/// `method` as a URL path segment sequence (slashes kept).
pub fn encode_for_path(method: &str) -> String {
    percent_encoding::utf8_percent_encode(method, PATH).to_string()
}

/// Go's `%q` of a string: double-quoted, with Go's escapes for what is not printable.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_path_clean() {
        for (input, want) in [
            ("", "."),
            ("a/b", "a/b"),
            ("a//b/", "a/b"),
            ("a/./b", "a/b"),
            ("a/../b", "b"),
            ("../a", "../a"),
            ("a/../../b", "../b"),
            ("/../a", "/a"),
            ("/a/b/..", "/a"),
            ("..", ".."),
        ] {
            assert_eq!(clean(input), want, "{input:?}");
        }
    }

    #[test]
    fn normalises_as_daprd() {
        assert_eq!(normalize("orders/../admin").unwrap(), "admin");
        assert_eq!(normalize("../../secret").unwrap(), "secret");
        assert_eq!(normalize("a/b/").unwrap(), "a/b");
        assert_eq!(normalize("..").unwrap(), "");
        assert_eq!(normalize("").unwrap(), "");
        assert_eq!(normalize("100%").unwrap(), "100%", "a percent is allowed");
        assert_eq!(normalize("a\\b").unwrap(), "a\\b", "a backslash is allowed");
        assert_eq!(normalize("a?b").unwrap_err().to_string(), r#"method contains forbidden character: "a?b""#);
        assert_eq!(normalize("a#b").unwrap_err().to_string(), r#"method contains forbidden character: "a#b""#);
        assert_eq!(normalize("a\0b").unwrap_err().to_string(), r#"method contains forbidden character: "a\x00b""#);
        assert_eq!(normalize("ab\ncd").unwrap_err().to_string(), r#"method contains control character at position 2: "ab\ncd""#);
        assert_eq!(normalize("x\u{7f}").unwrap_err().to_string(), r#"method contains control character at position 1: "x\x7f""#);
    }

    #[test]
    fn decoded_names_are_encoded_again_for_the_url() {
        assert_eq!(encode_for_path("a b/100%/é"), "a%20b/100%25/%C3%A9");
        assert_eq!(encode_for_path("orders/42"), "orders/42");
    }
}
