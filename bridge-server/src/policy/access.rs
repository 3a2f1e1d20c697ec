//! What one session's user may call, checked for each request before it reaches the tool: the
//! per-user tool policy and the call rate limits. Sans-IO (the time is passed in).

use std::sync::Arc;

use tokio::time::Instant;

use shared::jsonrpc;

use super::rate::{Limiter, Rate};
use super::View;

/// JSON-RPC code for a call refused by a rate limit (the session goes on).
pub const RATE_LIMITED: i64 = -32014;

/// A name this long may have been cut when classified; with a policy in force it is refused
/// rather than matched on a part.
const NAME_CUT: usize = shared::ingress::METHOD_KEEP - 4;

/// The session's rights.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// The user, for the limiter and messages.
    pub user: String,
    /// The hosted tool's name.
    pub tool: String,
    /// Which of the server's tools the user may see and call.
    pub view: View,
    /// The relay's shared buckets; `None` when no rate applies.
    pub limiter: Option<Arc<Limiter>>,
    /// Calls per second over all the user's sessions.
    pub per_user: Option<Rate>,
    /// Calls per second to this tool.
    pub per_tool: Option<Rate>,
}

/// Which check refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The user's tool policy hides the tool.
    Denied,
    /// Over a call rate.
    RateLimited,
}

/// Why a call was refused, as the client will read it.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    /// JSON-RPC error code.
    pub code: i64,
    /// The error's text.
    pub message: String,
    /// Which check refused it.
    pub reason: Reason,
    /// For a rate limit: when to retry, in milliseconds (the error's `data.retryAfterMs`).
    pub retry_after_ms: Option<u64>,
}

impl Refused {
    /// The JSON-RPC error response for request `id`.
    pub fn response(&self, id: &jsonrpc::Id) -> Vec<u8> {
        let data = self
            .retry_after_ms
            .map(|ms| serde_json::json!({ "retryAfterMs": ms }));
        jsonrpc::error_response(Some(id), self.code, &self.message, data.as_ref())
    }
}

impl Access {
    /// Checks one request (`tool_name` for `tools/call`). Takes a token from the rate limits
    /// only when the call passes.
    pub fn check(
        &self,
        method: &str,
        tool_name: Option<&str>,
        now: Instant,
    ) -> Result<(), Refused> {
        if method != "tools/call" {
            return Ok(());
        }
        if !self.view.is_open() {
            let name = tool_name.unwrap_or_default();
            if name.len() >= NAME_CUT {
                return Err(Refused {
                    code: jsonrpc::INVALID_PARAMS,
                    message: format!(
                        "tool name of {} bytes or more cannot be checked against the relay's \
                         policy for `{}`; use a shorter name",
                        NAME_CUT, self.tool
                    ),
                    reason: Reason::Denied,
                    retry_after_ms: None,
                });
            }
            if !self.view.allows(name) {
                return Err(Refused {
                    code: jsonrpc::INVALID_PARAMS,
                    message: format!(
                        "Unknown tool: {} (not available to user `{}` on `{}`)",
                        shared::log_safe_max(name, 64),
                        shared::log_safe(&self.user),
                        self.tool
                    ),
                    reason: Reason::Denied,
                    retry_after_ms: None,
                });
            }
        }
        if let Some(limiter) = &self.limiter {
            limiter
                .admit(&self.user, &self.tool, self.per_user, self.per_tool, now)
                .map_err(|l| Refused {
                    code: RATE_LIMITED,
                    message: l.message(&self.user, &self.tool),
                    reason: Reason::RateLimited,
                    retry_after_ms: Some(
                        u64::try_from(l.retry_after.as_millis())
                            .unwrap_or(u64::MAX)
                            .max(1),
                    ),
                })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Rule, ToolPolicy};

    #[test]
    fn a_denied_tool_is_unknown_and_a_flood_is_limited() {
        let policy = ToolPolicy {
            rules: vec![Rule {
                users: vec!["*".into()],
                deny: vec!["delete_*".into()],
                ..Rule::default()
            }],
        };
        let a = Access {
            user: "alice".into(),
            tool: "files".into(),
            view: policy.view("alice", &[]),
            limiter: Some(Arc::default()),
            per_user: Some(Rate {
                per_second: 1.0,
                burst: 2,
            }),
            per_tool: None,
        };
        let now = Instant::now();
        let denied = a
            .check("tools/call", Some("delete_file"), now)
            .expect_err("denied");
        assert_eq!(denied.code, jsonrpc::INVALID_PARAMS);
        assert!(denied.message.starts_with("Unknown tool: delete_file"));
        let long = "x".repeat(200);
        assert!(
            a.check("tools/call", Some(&long), now).is_err(),
            "cut names refused"
        );
        // Denied calls took no tokens: the burst of 2 is all there.
        assert!(a.check("tools/call", Some("read_file"), now).is_ok());
        assert!(a.check("tools/call", Some("read_file"), now).is_ok());
        let limited = a
            .check("tools/call", Some("read_file"), now)
            .expect_err("limited");
        assert_eq!(limited.code, RATE_LIMITED);
        assert_eq!(limited.retry_after_ms, Some(1000));
        let body: serde_json::Value =
            serde_json::from_slice(&limited.response(&jsonrpc::Id::Num("7".into()))).expect("json");
        assert_eq!(body["error"]["data"]["retryAfterMs"], 1000);
        // Other methods are not counted.
        assert!(a.check("tools/list", None, now).is_ok());
    }
}
