//! In-memory evaluator for Dapr's state query language.
//!
//! This module owns the `/v1.0-alpha1/state/{store}/query` language: parsing
//! the JSON query document (`filter`, `sort`, `page`) into a [`Query`], and
//! executing it over a list of stored items. State stores without a native
//! query engine list their items as [`QueryCandidate`]s and hand them to
//! [`Query::execute`], so every such store answers queries identically.
//!
//! Semantics, in brief:
//! - filters are trees of `EQ`, `IN`, `AND` and `OR`; keys are dot paths into
//!   the item's JSON value (`person.org`), a leading `value.` is ignored, and a
//!   numeric segment indexes into an array;
//! - items whose data is not JSON never match, and are left out whenever a
//!   filter or a sort is present;
//! - sorting compares numbers numerically, strings lexically and mixed types
//!   by a fixed type order; missing (or `null`) values sort last whichever the
//!   direction; ties, and queries without a sort, fall back to key order;
//! - the page token is the decimal offset of the next item in that order.
//!
//! The whole candidate list is scanned on every call: this is a fallback for
//! small stores, not an index.

use std::cmp::Ordering;

use bytes::Bytes;
use serde_json::{Map, Number, Value};

/// Builds a [`QueryError::Malformed`] from a format string.
macro_rules! malformed {
    ($($arg:tt)*) => {
        QueryError::Malformed(format!($($arg)*))
    };
}

/// Errors of parsing or executing a query document.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum QueryError {
    /// The document is not valid JSON.
    #[error("query document is not valid json: {0}")]
    InvalidJson(String),
    /// The document is JSON but does not have the shape of a query.
    #[error("malformed query: {0}")]
    Malformed(String),
    /// The page token is not a decimal offset.
    #[error("invalid page token {0:?}: expected a decimal offset")]
    InvalidToken(String),
}

/// A parsed query.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Query {
    /// The filter tree; `None` matches every item.
    pub filter: Option<Filter>,
    /// Sort keys, most significant first.
    pub sort: Vec<SortKey>,
    /// Maximum number of results per page; `None` (or 0) means no limit.
    pub limit: Option<usize>,
    /// Offset token returned by a previous page; `None` starts at the beginning.
    pub token: Option<String>,
}

/// A node of the filter tree. Paths are dot paths into the item's JSON value,
/// stored without any leading `value.` prefix.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// The value at the path equals the given value.
    Eq(String, Value),
    /// The value at the path equals one of the given values.
    In(String, Vec<Value>),
    /// Every operand matches.
    And(Vec<Filter>),
    /// At least one operand matches.
    Or(Vec<Filter>),
}

/// One sort key.
#[derive(Debug, Clone, PartialEq)]
pub struct SortKey {
    /// Dot path of the value to sort by, without any leading `value.` prefix.
    pub key: String,
    /// `true` for `DESC`, `false` for `ASC` (the default).
    pub descending: bool,
}

/// One stored item offered to the evaluator.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryCandidate {
    /// The item's state key.
    pub key: String,
    /// The item's stored bytes; expected to be a JSON document.
    pub data: Bytes,
    /// The item's etag, passed through untouched.
    pub etag: Option<String>,
}

/// One page of results.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct QueryPage {
    /// The matching items of this page, in query order.
    pub results: Vec<QueryCandidate>,
    /// Token for the next page; `None` when no results remain.
    pub token: Option<String>,
}

impl Query {
    /// Parses the JSON query document (the request body, or the gRPC `query` string).
    ///
    /// An empty (or all-whitespace) document is accepted as `{}`. Unknown
    /// top-level fields are ignored and `null` parts count as absent.
    pub fn parse(doc: &[u8]) -> Result<Query, QueryError> {
        if doc.iter().all(u8::is_ascii_whitespace) {
            return Ok(Query::default());
        }
        let root: Value =
            serde_json::from_slice(doc).map_err(|e| QueryError::InvalidJson(e.to_string()))?;
        let Value::Object(root) = root else {
            return Err(malformed!("query document must be a json object"));
        };
        let filter = match root.get("filter") {
            None | Some(Value::Null) => None,
            Some(Value::Object(ops)) if ops.is_empty() => None,
            Some(f) => Some(parse_filter(f)?),
        };
        let sort = match root.get("sort") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(keys)) => {
                keys.iter().map(parse_sort_key).collect::<Result<_, _>>()?
            }
            Some(_) => return Err(malformed!("sort must be an array of objects")),
        };
        let (limit, token) = match root.get("page") {
            None | Some(Value::Null) => (None, None),
            Some(Value::Object(page)) => parse_page(page)?,
            Some(_) => return Err(malformed!("page must be an object")),
        };
        Ok(Query {
            filter,
            sort,
            limit,
            token,
        })
    }

    /// Filters, sorts and pages the candidates.
    ///
    /// Fails only when the token is not a decimal offset; an offset past the
    /// end yields an empty page.
    pub fn execute(&self, candidates: Vec<QueryCandidate>) -> Result<QueryPage, QueryError> {
        let offset = match self.token.as_deref() {
            None | Some("") => 0,
            Some(token) => parse_offset(token)?,
        };
        let needs_json = self.filter.is_some() || !self.sort.is_empty();
        let mut rows: Vec<(QueryCandidate, Value)> = candidates
            .into_iter()
            .filter_map(|candidate| {
                if !needs_json {
                    return Some((candidate, Value::Null));
                }
                let doc: Value = serde_json::from_slice(&candidate.data).ok()?;
                match &self.filter {
                    Some(filter) if !filter.matches(&doc) => None,
                    _ => Some((candidate, doc)),
                }
            })
            .collect();
        rows.sort_by(|a, b| self.compare(a, b));

        let total = rows.len();
        let start = offset.min(total);
        let end = match self.limit {
            Some(limit) if limit > 0 => start.saturating_add(limit).min(total),
            _ => total,
        };
        let token = (end < total).then(|| end.to_string());
        let results = rows
            .drain(start..end)
            .map(|(candidate, _)| candidate)
            .collect();
        Ok(QueryPage { results, token })
    }

    /// Orders two rows by the sort keys, then by state key ascending.
    fn compare(&self, a: &(QueryCandidate, Value), b: &(QueryCandidate, Value)) -> Ordering {
        self.sort
            .iter()
            .map(|key| {
                let left = lookup(&a.1, &key.key).filter(|v| !v.is_null());
                let right = lookup(&b.1, &key.key).filter(|v| !v.is_null());
                match (left, right) {
                    (None, None) => Ordering::Equal,
                    (None, Some(_)) => Ordering::Greater,
                    (Some(_), None) => Ordering::Less,
                    (Some(l), Some(r)) if key.descending => value_cmp(l, r).reverse(),
                    (Some(l), Some(r)) => value_cmp(l, r),
                }
            })
            .find(|ord| ord.is_ne())
            .unwrap_or_else(|| a.0.key.cmp(&b.0.key))
    }
}

impl Filter {
    /// Whether the JSON document satisfies this filter.
    fn matches(&self, doc: &Value) -> bool {
        match self {
            Filter::Eq(path, want) => lookup(doc, path).is_some_and(|v| json_eq(v, want)),
            Filter::In(path, wants) => {
                lookup(doc, path).is_some_and(|v| wants.iter().any(|w| json_eq(v, w)))
            }
            Filter::And(ops) => ops.iter().all(|f| f.matches(doc)),
            Filter::Or(ops) => ops.iter().any(|f| f.matches(doc)),
        }
    }
}

/// Parses one filter node: an object holding exactly one operator.
fn parse_filter(node: &Value) -> Result<Filter, QueryError> {
    let Value::Object(ops) = node else {
        return Err(malformed!("filter must be an object holding one operator"));
    };
    let Some((op, operand)) = only_entry(ops) else {
        let found = ops.len();
        return Err(malformed!(
            "filter must hold exactly one operator, found {found}"
        ));
    };
    match op.as_str() {
        "EQ" => {
            let (path, value) = single_pair(op, operand)?;
            Ok(Filter::Eq(path, value.clone()))
        }
        "IN" => {
            let (path, value) = single_pair(op, operand)?;
            match value {
                Value::Array(values) if !values.is_empty() => Ok(Filter::In(path, values.clone())),
                Value::Array(_) => Err(malformed!(
                    "operator IN needs at least one value for key {path:?}"
                )),
                _ => Err(malformed!(
                    "operator IN expects an array of values for key {path:?}"
                )),
            }
        }
        "AND" | "OR" => {
            let Value::Array(items) = operand else {
                return Err(malformed!("operator {op} expects an array of filters"));
            };
            let found = items.len();
            if found < 2 {
                return Err(malformed!(
                    "operator {op} needs at least 2 operands, found {found}"
                ));
            }
            let build = if op == "AND" { Filter::And } else { Filter::Or };
            Ok(build(
                items.iter().map(parse_filter).collect::<Result<_, _>>()?,
            ))
        }
        other => Err(malformed!(
            "unknown filter operator {other:?} (supported: EQ, IN, AND, OR)"
        )),
    }
}

/// Splits an `{"path": value}` operand, as taken by `EQ` and `IN`.
fn single_pair<'a>(op: &str, operand: &'a Value) -> Result<(String, &'a Value), QueryError> {
    let shape_err = |found: String| {
        malformed!("operator {op} expects an object with exactly one key, found {found}")
    };
    let Value::Object(pair) = operand else {
        return Err(shape_err(kind(operand).1.to_string()));
    };
    match only_entry(pair) {
        Some((path, value)) => Ok((normalize_path(path)?, value)),
        None => Err(shape_err(format!("{} keys", pair.len()))),
    }
}

/// The single entry of a one-entry object.
fn only_entry(map: &Map<String, Value>) -> Option<(&String, &Value)> {
    map.iter().next().filter(|_| map.len() == 1)
}

/// Strips a leading `value.` and rejects empty paths or empty segments.
fn normalize_path(raw: &str) -> Result<String, QueryError> {
    let path = raw.strip_prefix("value.").unwrap_or(raw);
    if path.is_empty() || path.split('.').any(str::is_empty) {
        return Err(malformed!("invalid key path {raw:?}: empty path segment"));
    }
    Ok(path.to_string())
}

/// Parses one `{"key": "...", "order": "ASC"|"DESC"}` sort entry.
fn parse_sort_key(entry: &Value) -> Result<SortKey, QueryError> {
    let Value::Object(fields) = entry else {
        return Err(malformed!("sort entries must be objects with a \"key\""));
    };
    let key = match fields.get("key") {
        Some(Value::String(key)) => normalize_path(key)?,
        _ => return Err(malformed!("sort entry needs a string \"key\"")),
    };
    let descending = match fields.get("order") {
        None | Some(Value::Null) => false,
        Some(Value::String(order)) if order == "ASC" => false,
        Some(Value::String(order)) if order == "DESC" => true,
        Some(other) => return Err(malformed!("sort order must be ASC or DESC, found {other}")),
    };
    Ok(SortKey { key, descending })
}

/// Parses the `page` object into `(limit, token)`.
fn parse_page(page: &Map<String, Value>) -> Result<(Option<usize>, Option<String>), QueryError> {
    let limit = match page.get("limit") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match (n.as_u64(), n.as_i64()) {
            (Some(limit), _) => usize::try_from(limit)
                .map(|limit| (limit > 0).then_some(limit))
                .map_err(|_| malformed!("page limit {limit} is too large"))?,
            (None, Some(_)) => {
                return Err(malformed!("page limit must not be negative, found {n}"))
            }
            (None, None) => return Err(malformed!("page limit must be an integer, found {n}")),
        },
        Some(other) => {
            return Err(malformed!(
                "page limit must be a number, found {}",
                kind(other).1
            ))
        }
    };
    let token = match page.get("token") {
        None | Some(Value::Null) => None,
        Some(Value::String(token)) if token.is_empty() => None,
        Some(Value::String(token)) => {
            parse_offset(token)?;
            Some(token.clone())
        }
        Some(other) => {
            return Err(malformed!(
                "page token must be a string, found {}",
                kind(other).1
            ))
        }
    };
    Ok((limit, token))
}

/// Reads a page token as a decimal offset.
fn parse_offset(token: &str) -> Result<usize, QueryError> {
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_digit()) {
        return Err(QueryError::InvalidToken(token.to_string()));
    }
    token
        .parse()
        .map_err(|_| QueryError::InvalidToken(token.to_string()))
}

/// Follows a dot path; numeric segments index arrays.
fn lookup<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(doc, |cur, segment| match cur {
        Value::Object(fields) => fields.get(segment),
        Value::Array(items) if segment.bytes().all(|b| b.is_ascii_digit()) => {
            segment.parse::<usize>().ok().and_then(|i| items.get(i))
        }
        _ => None,
    })
}

/// JSON equality where numbers compare by value (`1 == 1.0`).
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => num_cmp(x, y).is_eq(),
        (Value::Array(xs), Value::Array(ys)) => {
            xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| json_eq(x, y))
        }
        (Value::Object(xs), Value::Object(ys)) => {
            xs.len() == ys.len()
                && xs
                    .iter()
                    .all(|(k, x)| ys.get(k).is_some_and(|y| json_eq(x, y)))
        }
        _ => a == b,
    }
}

/// Total order on JSON values: by type (null, bool, number, string, array,
/// object), then by value within a type. Objects compare equal to each other.
fn value_cmp(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Number(x), Value::Number(y)) => num_cmp(x, y),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Array(xs), Value::Array(ys)) => xs
            .iter()
            .zip(ys)
            .map(|(x, y)| value_cmp(x, y))
            .find(|ord| ord.is_ne())
            .unwrap_or_else(|| xs.len().cmp(&ys.len())),
        _ => kind(a).0.cmp(&kind(b).0),
    }
}

/// Compares numbers exactly when both are integers, as floats otherwise.
fn num_cmp(a: &Number, b: &Number) -> Ordering {
    let int = |n: &Number| {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    };
    let float = |n: &Number| n.as_f64().unwrap_or(f64::NAN);
    match (int(a), int(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        _ => float(a).partial_cmp(&float(b)).unwrap_or(Ordering::Equal),
    }
}

/// The rank of a value's type in the sort order, and its name for messages.
fn kind(v: &Value) -> (u8, &'static str) {
    match v {
        Value::Null => (0, "null"),
        Value::Bool(_) => (1, "a boolean"),
        Value::Number(_) => (2, "a number"),
        Value::String(_) => (3, "a string"),
        Value::Array(_) => (4, "an array"),
        Value::Object(_) => (5, "an object"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cand(key: &str, data: &str) -> QueryCandidate {
        QueryCandidate {
            key: key.to_string(),
            data: Bytes::from(data.to_string()),
            etag: None,
        }
    }

    fn people() -> Vec<QueryCandidate> {
        vec![
            cand(
                "1",
                r#"{"person":{"org":"Dev Ops","id":1036},"city":"Seattle","state":"WA"}"#,
            ),
            cand(
                "2",
                r#"{"person":{"org":"Hardware","id":1028},"city":"Portland","state":"OR"}"#,
            ),
            cand(
                "3",
                r#"{"person":{"org":"Finance","id":1071},"city":"Sacramento","state":"CA"}"#,
            ),
            cand(
                "4",
                r#"{"person":{"org":"Dev Ops","id":1042},"city":"Spokane","state":"WA"}"#,
            ),
            cand(
                "5",
                r#"{"person":{"org":"Hardware","id":1007},"city":"Los Angeles","state":"CA"}"#,
            ),
            cand(
                "6",
                r#"{"person":{"org":"Finance","id":1094},"city":"Eugene","state":"OR"}"#,
            ),
        ]
    }

    fn keys_of(page: &QueryPage) -> Vec<&str> {
        page.results.iter().map(|c| c.key.as_str()).collect()
    }

    fn run(doc: &str, items: Vec<QueryCandidate>) -> Vec<String> {
        let query = Query::parse(doc.as_bytes()).expect("query parses");
        let page = query.execute(items).expect("query executes");
        keys_of(&page).into_iter().map(String::from).collect()
    }

    fn malformed_msg(doc: &str) -> String {
        match Query::parse(doc.as_bytes()) {
            Err(QueryError::Malformed(msg)) => {
                assert!(msg.starts_with(|c: char| c.is_ascii_lowercase()), "{msg}");
                msg
            }
            other => panic!("expected malformed for {doc}, got {other:?}"),
        }
    }

    #[test]
    fn parses_full_document() {
        let q = Query::parse(
            br#"{"filter":{"EQ":{"value.person.org":"A"}},
                "sort":[{"key":"state","order":"DESC"},{"key":"person.id"}],
                "page":{"limit":2,"token":"2"}}"#,
        )
        .expect("parses");
        assert_eq!(
            q,
            Query {
                filter: Some(Filter::Eq("person.org".into(), json!("A"))),
                sort: vec![
                    SortKey {
                        key: "state".into(),
                        descending: true
                    },
                    SortKey {
                        key: "person.id".into(),
                        descending: false
                    },
                ],
                limit: Some(2),
                token: Some("2".into()),
            }
        );
    }

    #[test]
    fn empty_query_returns_everything_in_key_order() {
        let mut items = people();
        items.reverse();
        items.push(cand("0", "not json"));
        assert_eq!(
            run("{}", items.clone()),
            ["0", "1", "2", "3", "4", "5", "6"]
        );
        assert_eq!(
            run("  ", items.clone()),
            ["0", "1", "2", "3", "4", "5", "6"]
        );
        assert_eq!(
            run(r#"{"filter":{},"sort":null,"page":null,"extra":1}"#, items),
            ["0", "1", "2", "3", "4", "5", "6"]
        );
    }

    #[test]
    fn eq_top_level_and_nested() {
        assert_eq!(
            run(r#"{"filter":{"EQ":{"state":"CA"}}}"#, people()),
            ["3", "5"]
        );
        assert_eq!(
            run(r#"{"filter":{"EQ":{"person.org":"Dev Ops"}}}"#, people()),
            ["1", "4"]
        );
        assert_eq!(
            run(r#"{"filter":{"EQ":{"value.person.id":1042}}}"#, people()),
            ["4"]
        );
        assert!(run(r#"{"filter":{"EQ":{"person.nope":"x"}}}"#, people()).is_empty());
        assert!(run(r#"{"filter":{"EQ":{"state.deeper":"CA"}}}"#, people()).is_empty());
    }

    #[test]
    fn eq_compares_numbers_by_value_and_matches_null_and_structures() {
        let items = vec![
            cand("a", r#"{"n":1}"#),
            cand("b", r#"{"n":1.0}"#),
            cand("c", r#"{"n":"1"}"#),
            cand("d", r#"{"n":null}"#),
            cand("e", r#"{"n":{"x":[1,2]}}"#),
            cand("f", r#"{}"#),
        ];
        assert_eq!(
            run(r#"{"filter":{"EQ":{"n":1}}}"#, items.clone()),
            ["a", "b"]
        );
        assert_eq!(run(r#"{"filter":{"EQ":{"n":null}}}"#, items.clone()), ["d"]);
        assert_eq!(
            run(r#"{"filter":{"EQ":{"n":{"x":[1.0,2]}}}}"#, items),
            ["e"]
        );
    }

    #[test]
    fn paths_index_into_arrays() {
        let items = vec![
            cand("a", r#"{"tags":["x","y"]}"#),
            cand("b", r#"{"tags":["y"]}"#),
        ];
        assert_eq!(
            run(r#"{"filter":{"EQ":{"tags.1":"y"}}}"#, items.clone()),
            ["a"]
        );
        assert_eq!(run(r#"{"filter":{"EQ":{"tags.0":"y"}}}"#, items), ["b"]);
    }

    #[test]
    fn in_matches_any_value() {
        assert_eq!(
            run(r#"{"filter":{"IN":{"state":["CA","WA"]}}}"#, people()),
            ["1", "3", "4", "5"]
        );
        assert_eq!(
            run(
                r#"{"filter":{"IN":{"person.id":[1007,1094,9999]}}}"#,
                people()
            ),
            ["5", "6"]
        );
        assert!(run(r#"{"filter":{"IN":{"state":["NY"]}}}"#, people()).is_empty());
    }

    #[test]
    fn and_or_and_nesting() {
        assert_eq!(
            run(
                r#"{"filter":{"AND":[{"EQ":{"person.org":"Dev Ops"}},{"EQ":{"city":"Spokane"}}]}}"#,
                people()
            ),
            ["4"]
        );
        assert_eq!(
            run(
                r#"{"filter":{"OR":[{"EQ":{"state":"OR"}},{"EQ":{"city":"Seattle"}}]}}"#,
                people()
            ),
            ["1", "2", "6"]
        );
        let nested = r#"{"filter":{"OR":[
            {"AND":[{"EQ":{"person.org":"Finance"}},{"IN":{"state":["CA","WA"]}}]},
            {"AND":[{"EQ":{"person.org":"Hardware"}},{"EQ":{"state":"OR"}}]}
        ]}}"#;
        assert_eq!(run(nested, people()), ["2", "3"]);
    }

    #[test]
    fn non_json_items_are_excluded_with_filter_or_sort() {
        let mut items = people();
        items.push(cand("0", "\u{1}binary"));
        assert!(!run(r#"{"filter":{"EQ":{"state":"CA"}}}"#, items.clone()).contains(&"0".into()));
        assert!(!run(r#"{"sort":[{"key":"state"}]}"#, items.clone()).contains(&"0".into()));
        assert!(run(r#"{"page":{"limit":10}}"#, items).contains(&"0".into()));
    }

    #[test]
    fn sort_numbers_numerically_and_strings_lexically() {
        let items = vec![
            cand("a", r#"{"n":10,"s":"b"}"#),
            cand("b", r#"{"n":2,"s":"B"}"#),
            cand("c", r#"{"n":-3.5,"s":"a"}"#),
            cand("d", r#"{"n":18446744073709551615,"s":"ab"}"#),
        ];
        assert_eq!(
            run(r#"{"sort":[{"key":"n"}]}"#, items.clone()),
            ["c", "b", "a", "d"]
        );
        assert_eq!(
            run(r#"{"sort":[{"key":"n","order":"DESC"}]}"#, items.clone()),
            ["d", "a", "b", "c"]
        );
        assert_eq!(
            run(r#"{"sort":[{"key":"s","order":"ASC"}]}"#, items),
            ["b", "c", "d", "a"]
        );
    }

    #[test]
    fn sort_multiple_keys_with_key_tiebreak() {
        let doc = r#"{"sort":[{"key":"state","order":"DESC"},{"key":"person.id"}]}"#;
        assert_eq!(run(doc, people()), ["1", "4", "2", "6", "5", "3"]);
        // Equal sort values fall back to key order.
        assert_eq!(
            run(r#"{"sort":[{"key":"state"}]}"#, people()),
            ["3", "5", "2", "6", "1", "4"]
        );
    }

    #[test]
    fn missing_and_null_sort_last_in_both_directions() {
        let items = vec![
            cand("a", r#"{}"#),
            cand("b", r#"{"n":1}"#),
            cand("c", r#"{"n":null}"#),
            cand("d", r#"{"n":2}"#),
        ];
        assert_eq!(
            run(r#"{"sort":[{"key":"n"}]}"#, items.clone()),
            ["b", "d", "a", "c"]
        );
        assert_eq!(
            run(r#"{"sort":[{"key":"n","order":"DESC"}]}"#, items),
            ["d", "b", "a", "c"]
        );
    }

    #[test]
    fn mixed_types_sort_by_type_order() {
        let items = vec![
            cand("obj", r#"{"v":{"x":1}}"#),
            cand("arr", r#"{"v":[1]}"#),
            cand("str", r#"{"v":"1"}"#),
            cand("num", r#"{"v":1}"#),
            cand("bool", r#"{"v":true}"#),
        ];
        assert_eq!(
            run(r#"{"sort":[{"key":"v"}]}"#, items),
            ["bool", "num", "str", "arr", "obj"]
        );
    }

    #[test]
    fn paging_walks_all_pages_with_tokens() {
        let mut token: Option<String> = None;
        let mut seen = Vec::new();
        let mut pages = 0;
        loop {
            let query = Query {
                sort: vec![SortKey {
                    key: "person.id".into(),
                    descending: false,
                }],
                limit: Some(2),
                token: token.clone(),
                ..Query::default()
            };
            let page = query.execute(people()).expect("executes");
            pages += 1;
            seen.extend(keys_of(&page).into_iter().map(String::from));
            match page.token {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        assert_eq!(pages, 3);
        assert_eq!(seen, ["5", "2", "1", "4", "3", "6"]);
    }

    #[test]
    fn paging_tokens_and_limits() {
        let page = Query::parse(br#"{"page":{"limit":4}}"#).and_then(|q| q.execute(people()));
        let page = page.expect("first page");
        assert_eq!(keys_of(&page), ["1", "2", "3", "4"]);
        assert_eq!(page.token.as_deref(), Some("4"));

        let page = Query::parse(br#"{"page":{"limit":4,"token":"4"}}"#)
            .and_then(|q| q.execute(people()))
            .expect("last page");
        assert_eq!(keys_of(&page), ["5", "6"]);
        assert_eq!(page.token, None);

        // Token without a limit returns the rest; limit 0 means everything.
        assert_eq!(run(r#"{"page":{"token":"3"}}"#, people()), ["4", "5", "6"]);
        assert_eq!(run(r#"{"page":{"limit":0}}"#, people()).len(), 6);
        assert_eq!(
            Query::parse(br#"{"page":{"limit":0,"token":""}}"#),
            Ok(Query::default())
        );
        // Exactly filling the last page leaves no token; past the end is empty.
        let page = Query::parse(br#"{"page":{"limit":3,"token":"3"}}"#)
            .and_then(|q| q.execute(people()))
            .expect("exact page");
        assert_eq!((page.results.len(), page.token), (3, None));
        assert_eq!(
            run(r#"{"page":{"limit":3,"token":"99"}}"#, people()),
            Vec::<String>::new()
        );
    }

    #[test]
    fn results_keep_data_and_etag() {
        let mut item = cand("k", r#"{"a":1}"#);
        item.etag = Some("7".into());
        let page = Query::default()
            .execute(vec![item.clone()])
            .expect("executes");
        assert_eq!(
            page,
            QueryPage {
                results: vec![item],
                token: None
            }
        );
    }

    #[test]
    fn bad_tokens_are_rejected() {
        for token in ["abc", "-1", "+1", "1.5", " 1", "99999999999999999999999"] {
            let doc = json!({"page": {"token": token}}).to_string();
            assert_eq!(
                Query::parse(doc.as_bytes()),
                Err(QueryError::InvalidToken(token.to_string())),
                "{token}"
            );
            let query = Query {
                token: Some(token.to_string()),
                ..Query::default()
            };
            assert_eq!(
                query.execute(people()),
                Err(QueryError::InvalidToken(token.to_string()))
            );
        }
    }

    #[test]
    fn invalid_json_is_reported() {
        assert!(matches!(
            Query::parse(b"{\"filter\":"),
            Err(QueryError::InvalidJson(_))
        ));
    }

    #[test]
    fn malformed_documents() {
        let cases = [
            (r#"[]"#, "json object"),
            (r#"{"filter":"EQ"}"#, "filter must be an object"),
            (
                r#"{"filter":{"NEQ":{"a":1}}}"#,
                "unknown filter operator \"NEQ\"",
            ),
            (
                r#"{"filter":{"eq":{"a":1}}}"#,
                "unknown filter operator \"eq\"",
            ),
            (
                r#"{"filter":{"EQ":{"a":1},"IN":{"b":[1]}}}"#,
                "exactly one operator, found 2",
            ),
            (
                r#"{"filter":{"EQ":{"a":1,"b":2}}}"#,
                "operator EQ expects an object with exactly one key, found 2 keys",
            ),
            (
                r#"{"filter":{"EQ":{}}}"#,
                "operator EQ expects an object with exactly one key, found 0 keys",
            ),
            (
                r#"{"filter":{"EQ":"a"}}"#,
                "operator EQ expects an object with exactly one key, found a string",
            ),
            (r#"{"filter":{"EQ":{"":1}}}"#, "invalid key path"),
            (r#"{"filter":{"EQ":{"a..b":1}}}"#, "invalid key path"),
            (r#"{"filter":{"EQ":{"value.":1}}}"#, "invalid key path"),
            (
                r#"{"filter":{"IN":{"a":"CA"}}}"#,
                "operator IN expects an array",
            ),
            (
                r#"{"filter":{"IN":{"a":[]}}}"#,
                "operator IN needs at least one value",
            ),
            (
                r#"{"filter":{"IN":{"a":[1],"b":[2]}}}"#,
                "operator IN expects an object with exactly one key",
            ),
            (
                r#"{"filter":{"AND":[{"EQ":{"a":1}}]}}"#,
                "operator AND needs at least 2 operands, found 1",
            ),
            (
                r#"{"filter":{"OR":[]}}"#,
                "operator OR needs at least 2 operands, found 0",
            ),
            (
                r#"{"filter":{"AND":{"EQ":{"a":1}}}}"#,
                "operator AND expects an array of filters",
            ),
            (
                r#"{"filter":{"OR":[{"EQ":{"a":1}},{"XX":{"a":1}}]}}"#,
                "unknown filter operator \"XX\"",
            ),
            (r#"{"sort":{"key":"a"}}"#, "sort must be an array"),
            (r#"{"sort":["a"]}"#, "sort entries must be objects"),
            (
                r#"{"sort":[{"order":"ASC"}]}"#,
                "sort entry needs a string \"key\"",
            ),
            (
                r#"{"sort":[{"key":"a","order":"desc"}]}"#,
                "sort order must be ASC or DESC",
            ),
            (
                r#"{"sort":[{"key":"a","order":1}]}"#,
                "sort order must be ASC or DESC",
            ),
            (r#"{"page":[]}"#, "page must be an object"),
            (
                r#"{"page":{"limit":-1}}"#,
                "page limit must not be negative",
            ),
            (r#"{"page":{"limit":1.5}}"#, "page limit must be an integer"),
            (r#"{"page":{"limit":"2"}}"#, "page limit must be a number"),
            (r#"{"page":{"token":2}}"#, "page token must be a string"),
        ];
        for (doc, want) in cases {
            let msg = malformed_msg(doc);
            assert!(msg.contains(want), "{doc}: {msg:?} lacks {want:?}");
        }
        let err = Query::parse(br#"{"filter":{"IN":{"a":1}}}"#).expect_err("rejected");
        assert!(
            err.to_string().starts_with("malformed query: operator IN"),
            "{err}"
        );
    }
}
