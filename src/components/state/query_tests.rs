//! Unit tests of the state query evaluator (`query.rs`).

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
