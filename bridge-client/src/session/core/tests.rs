//! Unit tests of the client core, with explicit time.

use super::ide::with_id;
use super::*;

#[test]
fn replayed_initialize_gets_its_own_id() {
    let init = br#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18"}}"#;
    let id = Id::Str("mcp-bridge-reinit-1".into());
    let line = with_id(init, &id).expect("rewritten");
    let v: serde_json::Value = serde_json::from_slice(&line).expect("json");
    assert_eq!(v["id"], "mcp-bridge-reinit-1");
    assert_eq!(v["params"]["protocolVersion"], "2025-06-18");
}
