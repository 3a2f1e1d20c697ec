use super::*;
use shared::jsonrpc::HEADER_MISMATCH;

/// A `tools/list` answer with `sql` (Region on a string, N on a nested integer, Dry on a
/// boolean), `plain` (no annotations) and `bad` (an annotation on a number).
const LIST: &[u8] = br#"{"jsonrpc":"2.0","id":7,"result":{"tools":[
    {"name":"sql","inputSchema":{"type":"object","properties":{
        "region":{"type":"string","x-mcp-header":"Region"},
        "opts":{"type":"object","properties":{
            "n":{"type":"integer","x-mcp-header":"N"},
            "dry":{"type":"boolean","x-mcp-header":"Dry"}}},
        "query":{"type":"string"}}}},
    {"name":"plain","inputSchema":{"type":"object","properties":{"q":{"type":"string"}}}},
    {"name":"bad","inputSchema":{"type":"object","properties":{
        "f":{"type":"number","x-mcp-header":"F"}}}}]}}"#;

fn table() -> ToolParams {
    let mut t = ToolParams::default();
    let learned = learn(&mut t, LIST);
    assert_eq!(learned.invalid.len(), 1);
    assert_eq!(learned.invalid[0].name, "bad");
    assert_eq!(learned.next_cursor, None);
    t
}

fn call(args: &str) -> Vec<u8> {
    format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"sql","arguments":{args}}}}}"#
    )
    .into_bytes()
}

fn hs(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
        .collect()
}

fn refused(args: &str, pairs: &[(&str, &str)]) -> String {
    let t = table();
    let r = check(t.of("sql"), &call(args), &hs(pairs)).expect_err("refused");
    assert_eq!((r.status, r.code), (400, HEADER_MISMATCH));
    assert!(r.message.starts_with("Header mismatch: "), "{}", r.message);
    r.message
}

#[test]
fn matching_headers_pass() {
    let t = table();
    let sql = t.of("sql");
    let args = r#"{"region":"us-west1","opts":{"n":42,"dry":false},"query":"x"}"#;
    let ok = hs(&[
        ("mcp-param-region", "us-west1"),
        ("mcp-param-n", "42"),
        ("mcp-param-dry", "false"),
    ]);
    assert_eq!(check(sql, &call(args), &ok), Ok(()));
    // Encoded values are decoded; integers compare as numbers.
    let args = r#"{"region":"Hello, 世界","opts":{"n":42.0}}"#;
    let ok = hs(&[
        ("mcp-param-region", "=?base64?SGVsbG8sIOS4lueVjA==?="),
        ("mcp-param-n", "42.0"),
    ]);
    assert_eq!(check(sql, &call(args), &ok), Ok(()));
    // Absent and null arguments expect no header; an undeclared header is not judged.
    let ok = hs(&[("mcp-param-other", "x")]);
    assert_eq!(check(sql, &call(r#"{"region":null}"#), &ok), Ok(()));
    // A tool without annotations, or not known: nothing to check.
    assert!(t.of("plain").is_empty() && t.of("bad").is_empty() && t.of("nope").is_empty());
    assert_eq!(check(&[], &call(r#"{"region":"x"}"#), &ok), Ok(()));
}

#[test]
fn each_mismatch_is_named() {
    let m = refused(r#"{"region":"us-west1"}"#, &[]);
    assert!(m.contains("Mcp-Param-Region header is missing"), "{m}");
    assert!(m.contains("`region` is present"), "{m}");
    let m = refused(
        r#"{"region":"us-west1"}"#,
        &[("mcp-param-region", "eu-west1")],
    );
    assert!(
        m.contains("Mcp-Param-Region header value `eu-west1` does not match the body's argument `region` value `us-west1`"),
        "{m}"
    );
    let m = refused(r#"{"query":"x"}"#, &[("mcp-param-region", "us-west1")]);
    assert!(
        m.contains("present, but the body's argument `region` is absent"),
        "{m}"
    );
    let m = refused(r#"{"opts":{"n":{"x":1}}}"#, &[("mcp-param-n", "1")]);
    assert!(m.contains("no string, boolean or safe integer"), "{m}");
    let m = refused(
        r#"{"region":"a"}"#,
        &[("mcp-param-region", "a"), ("mcp-param-region", "a")],
    );
    assert!(m.contains("more than once"), "{m}");
    let m = refused(
        r#"{"region":"a"}"#,
        &[("mcp-param-region", "=?base64?!!?=")],
    );
    assert!(m.contains("not valid `=?base64?"), "{m}");
    let m = refused(r#"{"region":"é"}"#, &[("mcp-param-region", "é")]);
    assert!(m.contains("outside visible ASCII"), "{m}");
    let m = refused(r#"{"opts":{"n":42}}"#, &[("mcp-param-n", "42.5")]);
    assert!(m.contains("Mcp-Param-N header value `42.5`"), "{m}");
    let m = refused(r#"{"opts":{"dry":true}}"#, &[("mcp-param-dry", "True")]);
    assert!(m.contains("Mcp-Param-Dry"), "{m}");
}

#[test]
fn integers_compare_as_numbers() {
    assert!(same_integer("42", 42));
    assert!(same_integer("42.00", 42));
    assert!(same_integer("-7", -7));
    assert!(!same_integer("42.", 42));
    assert!(!same_integer("42.5", 42));
    assert!(!same_integer("+42", 42));
    assert!(!same_integer("4e1", 40));
    assert!(!same_integer("", 0));
}

#[test]
fn a_new_list_replaces_what_was_known() {
    let mut t = table();
    let again = br#"{"jsonrpc":"2.0","id":8,"result":{"nextCursor":"p2","tools":[
        {"name":"sql","inputSchema":{"type":"object","properties":{"region":{"type":"string"}}}}]}}"#;
    let learned = learn(&mut t, again);
    assert!(learned.invalid.is_empty());
    assert_eq!(learned.next_cursor.as_deref(), Some("p2"));
    assert!(t.of("sql").is_empty(), "no annotations any more");
    assert!(learn(&mut t, b"not json").next_cursor.is_none());
    let error = br#"{"jsonrpc":"2.0","id":9,"error":{"code":-32601,"message":"x"}}"#;
    assert!(learn(&mut t, error).invalid.is_empty());
}
