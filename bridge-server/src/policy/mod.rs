//! Per-user policy inside a hosted MCP server: which of the server's own tools a user may see
//! and call ([`ToolPolicy`]), and how fast a user may call ([`rate`]). Sans-IO: decisions on
//! names and bytes, no sockets or clocks of its own.
//!
//! A policy is a list of rules, each for some users (or groups, or everyone); the rules that
//! apply to a user are combined: a name is visible when some rule allows it (no `allow` list
//! means all) and no rule denies it. Names are matched with globs (`*` any run, `?` one
//! character). Hidden tools are removed from `tools/list` results, and a `tools/call` to one is
//! refused by the relay with the same error an unknown tool gets.

use bytes::Bytes;
use serde_json::Value;

mod access;
pub mod rate;

pub use access::{Access, Reason, Refused, RATE_LIMITED};

/// One `[[tool.policy]]` rule.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rule {
    /// Users it applies to (`"*"`: everyone).
    pub users: Vec<String>,
    /// Groups it applies to.
    pub groups: Vec<String>,
    /// Globs of tool names the users may use; empty: all.
    pub allow: Vec<String>,
    /// Globs of tool names the users may not use.
    pub deny: Vec<String>,
}

impl Rule {
    fn applies(&self, user: &str, groups: &[String]) -> bool {
        self.users.iter().any(|u| u == "*" || u == user)
            || self.groups.iter().any(|g| groups.contains(g))
    }
}

/// The rules of one hosted tool.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ToolPolicy {
    /// In config order.
    pub rules: Vec<Rule>,
}

/// What one user may see of one hosted tool (the rules that apply, taken once per session).
#[derive(Debug, Clone, Default)]
pub struct View {
    allow: Option<Vec<String>>,
    deny: Vec<String>,
}

impl ToolPolicy {
    /// Whether any rule exists (no policy: everything visible, nothing parsed).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The view of `user` (in `groups`).
    pub fn view(&self, user: &str, groups: &[String]) -> View {
        let mut view = View::default();
        for r in self.rules.iter().filter(|r| r.applies(user, groups)) {
            if !r.allow.is_empty() {
                view.allow
                    .get_or_insert_with(Vec::new)
                    .extend(r.allow.iter().cloned());
            }
            view.deny.extend(r.deny.iter().cloned());
        }
        view
    }
}

impl View {
    /// Whether everything is visible (no filtering needed).
    pub fn is_open(&self) -> bool {
        self.allow.is_none() && self.deny.is_empty()
    }

    /// Whether the user may see and call the tool `name`.
    pub fn allows(&self, name: &str) -> bool {
        let allowed = self
            .allow
            .as_ref()
            .is_none_or(|a| a.iter().any(|g| glob(g, name)));
        allowed && !self.deny.iter().any(|g| glob(g, name))
    }

    /// A `tools/list` response with the hidden tools removed, or `None` when nothing is
    /// hidden (the bytes go on unchanged). A response that is not a well-formed list is left
    /// alone: the client sees what the server sent.
    pub fn filter_tools_list(&self, response: &[u8]) -> Option<Bytes> {
        if self.is_open() {
            return None;
        }
        let mut v: Value = serde_json::from_slice(response).ok()?;
        let tools = v.pointer_mut("/result/tools")?.as_array_mut()?;
        let before = tools.len();
        tools.retain(|t| {
            t.get("name")
                .and_then(Value::as_str)
                .is_none_or(|n| self.allows(n))
        });
        if tools.len() == before {
            return None;
        }
        serde_json::to_vec(&v).ok().map(Bytes::from)
    }
}

/// `*` matches any run of characters, `?` one; everything else itself.
pub fn glob(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // Iterative matching with one backtrack point (the last `*`): linear in practice.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(c) if *c == '?' || *c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(users: &[&str], allow: &[&str], deny: &[&str]) -> Rule {
        let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect();
        Rule {
            users: s(users),
            groups: Vec::new(),
            allow: s(allow),
            deny: s(deny),
        }
    }

    #[test]
    fn globs_match_like_shell_patterns() {
        assert!(glob("read_*", "read_file"));
        assert!(glob("*", ""));
        assert!(glob("*_file", "write_file"));
        assert!(glob("?et", "get"));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxbyy"));
        assert!(!glob("read_*", "write_file"));
        assert!(!glob("get", "gets"));
    }

    #[test]
    fn rules_combine_allow_and_deny_per_user() {
        let p = ToolPolicy {
            rules: vec![
                rule(&["*"], &[], &["delete_*"]),
                rule(&["bob"], &["read_*", "list_*"], &[]),
            ],
        };
        let alice = p.view("alice", &[]);
        assert!(alice.allows("write_file"));
        assert!(!alice.allows("delete_file"));
        let bob = p.view("bob", &[]);
        assert!(bob.allows("read_file"));
        assert!(!bob.allows("write_file"));
        assert!(!bob.allows("delete_all"));
        let groups = ToolPolicy {
            rules: vec![Rule {
                groups: vec!["ops".into()],
                deny: vec!["*".into()],
                ..Rule::default()
            }],
        };
        assert!(!groups.view("carol", &["ops".into()]).allows("x"));
        assert!(groups.view("carol", &[]).is_open());
    }

    #[test]
    fn a_tools_list_loses_exactly_the_hidden_tools() {
        let p = ToolPolicy {
            rules: vec![rule(&["*"], &[], &["delete_*"])],
        };
        let v = p.view("alice", &[]);
        let resp = br#"{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"read_file"},{"name":"delete_file"}],"nextCursor":"c"}}"#;
        let out = v.filter_tools_list(resp).expect("filtered");
        let out: Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(out["result"]["tools"].as_array().map(Vec::len), Some(1));
        assert_eq!(out["result"]["tools"][0]["name"], "read_file");
        assert_eq!(out["result"]["nextCursor"], "c", "the rest is kept");
        assert_eq!(out["id"], 3);
        // Nothing hidden: the bytes go on as they were.
        let clean = br#"{"jsonrpc":"2.0","id":4,"result":{"tools":[{"name":"read_file"}]}}"#;
        assert!(v.filter_tools_list(clean).is_none());
        // An error answer is left alone.
        assert!(v
            .filter_tools_list(br#"{"jsonrpc":"2.0","id":5,"error":{"code":1,"message":"x"}}"#)
            .is_none());
    }
}
