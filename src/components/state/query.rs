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
#[path = "query_tests.rs"]
mod tests;
