use super::*;
use serde_json::json;

fn list(tools: Value) -> Vec<Value> {
    match tools {
        Value::Array(t) => t,
        _ => panic!("an array of tools"),
    }
}

#[test]
fn annotated_arguments_become_headers() {
    let mut p = ToolParams::default();
    let tools = list(json!([{"name": "sql", "inputSchema": {"type": "object",
        "properties": {
            "region": {"type": "string", "x-mcp-header": "Region"},
            "opts": {"type": "object", "properties": {
                "n": {"type": "integer", "x-mcp-header": "N"},
                "dry": {"type": "boolean", "x-mcp-header": "Dry"}}},
            "query": {"type": "string"}}}}]));
    assert!(p.learn(&tools).is_empty());
    let call = br#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"sql",
        "arguments":{"region":"Hello, \u4e16\u754c","opts":{"n":42.0,"dry":false},"query":"x"}}}"#;
    let args = arguments_of(call);
    let h = p.headers("sql", args.as_ref());
    let get = |n: &str| h.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    assert_eq!(
        get("mcp-param-region").expect("region"),
        "=?base64?SGVsbG8sIOS4lueVjA==?="
    );
    assert_eq!(get("mcp-param-n").expect("n"), "42");
    assert_eq!(get("mcp-param-dry").expect("dry"), "false");
    let args = json!({"region": null});
    assert!(
        p.headers("sql", Some(&args)).is_empty(),
        "null and absent: no header"
    );
    assert!(p.headers("other", Some(&args)).is_empty());
    assert!(p.headers("sql", None).is_empty());
    let by = |n: &str| p.of("sql").iter().find(|x| x.name == n).cloned().expect(n);
    let region = by("Region");
    assert_eq!(
        (region.display(), region.argument()),
        ("Mcp-Param-Region".to_owned(), "region".to_owned())
    );
    assert_eq!(by("N").argument(), "opts.n");
}

#[test]
fn values_found_at_a_path() {
    let p = Param {
        name: "N".into(),
        path: vec!["a".into(), "b".into()],
    };
    let at = |v: Value| p.value_in(Some(&json!({"a": {"b": v}})));
    assert_eq!(at(json!("x")), Found::Text("x".into()));
    assert_eq!(at(json!(true)), Found::Text("true".into()));
    assert_eq!(at(json!(-7)), Found::Integer(-7));
    assert_eq!(at(json!(42.0)), Found::Integer(42));
    assert_eq!(at(json!(1.5)), Found::Unrenderable);
    assert_eq!(at(json!(9_007_199_254_740_993_i64)), Found::Unrenderable);
    assert_eq!(at(json!({"x": 1})), Found::Unrenderable);
    assert_eq!(at(Value::Null), Found::Absent);
    assert_eq!(p.value_in(Some(&json!({"a": 1}))), Found::Absent);
}

#[test]
fn tools_with_invalid_annotations_are_named_and_forgotten() {
    let mut p = ToolParams::default();
    let ok = json!({"name": "dup", "inputSchema": {"type": "object", "properties": {
        "a": {"type": "string", "x-mcp-header": "A"}}}});
    assert!(p.learn(&[ok]).is_empty());
    assert_eq!(p.of("dup").len(), 1);
    let tools = list(json!([
        {"name": "ok", "inputSchema": {"type": "object", "properties": {
            "a": {"type": "string", "x-mcp-header": "A"}}}},
        {"name": "in-array", "inputSchema": {"type": "object", "properties": {
            "xs": {"type": "array", "items": {"type": "string", "x-mcp-header": "X"}}}}},
        {"name": "number", "inputSchema": {"type": "object", "properties": {
            "f": {"type": "number", "x-mcp-header": "F"}}}},
        {"name": "dup", "inputSchema": {"type": "object", "properties": {
            "a": {"type": "string", "x-mcp-header": "A"},
            "b": {"type": "string", "x-mcp-header": "a"}}}},
        {"name": "bad-token", "inputSchema": {"type": "object", "properties": {
            "a": {"type": "string", "x-mcp-header": "a b"}}}},
        {"name": "in-oneof", "inputSchema": {"type": "object", "oneOf": [
            {"properties": {"a": {"type": "string", "x-mcp-header": "A"}}}]}},
        {"name": "plain", "inputSchema": {"type": "object", "properties": {
            "a": {"type": "string", "default": {"x-mcp-header": 1}}}}}
    ]));
    let invalid = p.learn(&tools);
    let at: Vec<usize> = invalid.iter().map(|i| i.index).collect();
    assert_eq!(at, [1, 2, 3, 4, 5]);
    assert_eq!(invalid[2].name, "dup");
    assert!(invalid[2].why.contains("used twice"), "{}", invalid[2].why);
    assert!(p.of("dup").is_empty(), "an invalid tool is forgotten");
    assert_eq!(p.of("ok").len(), 1);
    assert!(p.of("plain").is_empty());
}

#[test]
fn the_tool_count_is_bounded() {
    let mut p = ToolParams::default();
    let tool = |i: usize| {
        json!({"name": format!("t{i}"), "inputSchema": {"type": "object", "properties": {
            "a": {"type": "string", "x-mcp-header": "A"}}}})
    };
    let tools: Vec<Value> = (0..MAX_TOOLS + 5).map(tool).collect();
    assert!(p.learn(&tools).is_empty());
    assert_eq!(p.tools.len(), MAX_TOOLS);
    assert!(p.of(&format!("t{}", MAX_TOOLS + 1)).is_empty());
    let many: Map<String, Value> = (0..=MAX_PER_TOOL)
        .map(|i| {
            (
                format!("p{i}"),
                json!({"type": "string", "x-mcp-header": format!("P{i}")}),
            )
        })
        .collect();
    let big = json!({"name": "big", "inputSchema": {"type": "object", "properties": many}});
    assert_eq!(p.learn(&[big]).len(), 1, "too many annotations: invalid");
}

#[test]
fn values_are_encoded_and_decoded() {
    assert_eq!(encoded_value("us-west1"), "us-west1");
    assert_eq!(
        encoded_value("Hello, 世界"),
        "=?base64?SGVsbG8sIOS4lueVjA==?="
    );
    assert_eq!(encoded_value(" padded "), "=?base64?IHBhZGRlZCA=?=");
    assert_eq!(encoded_value("line1\nline2"), "=?base64?bGluZTEKbGluZTI=?=");
    assert_eq!(
        encoded_value("=?base64?literal?="),
        "=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?="
    );
    assert_eq!(encoded_value(""), "=?base64??=");
    for s in [
        "us-west1",
        "Hello, 世界",
        " padded ",
        "=?base64?literal?=",
        "",
    ] {
        assert_eq!(decoded_value(&encoded_value(s)).as_deref(), Some(s));
    }
    assert_eq!(decoded_value("=?base64?!!?="), None);
    assert_eq!(decoded_value("=?base64?//79?="), None, "not UTF-8");
}
