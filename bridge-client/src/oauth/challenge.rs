//! `WWW-Authenticate` parsing (RFC 9110 §11.6.1, RFC 6750 §3, RFC 9728 §5.1): the Bearer
//! challenge's `resource_metadata`, `scope` and `error`. Sans-IO; what to do with a challenge is
//! [`super::authorizer`]'s business.

/// What a `Bearer` challenge says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BearerChallenge {
    /// RFC 9728: where the protected-resource metadata is.
    pub resource_metadata: Option<String>,
    /// The scopes the request needs (space-separated), authoritative for it.
    pub scope: Option<String>,
    /// `invalid_token`, `insufficient_scope`, …
    pub error: Option<String>,
    /// Human text from the server (not trusted, log it only through `log_safe`).
    pub error_description: Option<String>,
}

impl BearerChallenge {
    /// True when the server asks for more scopes (a 403 step-up).
    pub fn insufficient_scope(&self) -> bool {
        self.error.as_deref() == Some("insufficient_scope")
    }

    /// For a 403 `insufficient_scope` naming scopes that `held` (the scope of the tokens in
    /// use) lacks: the scope to ask for in a step-up sign-in — what is held plus what is asked,
    /// so the step-up keeps what the earlier sign-in gave. `None` when nothing new is asked
    /// (signing in again would get the same refusal).
    pub fn step_up_scope(&self, held: Option<&str>) -> Option<String> {
        if !self.insufficient_scope() {
            return None;
        }
        let held: Vec<&str> = held.unwrap_or("").split_whitespace().collect();
        let asked = self.scope.as_deref().unwrap_or("").split_whitespace();
        let mut all = held.clone();
        for s in asked {
            if !all.contains(&s) {
                all.push(s);
            }
        }
        (all.len() > held.len()).then(|| all.join(" "))
    }
}

/// The first `Bearer` challenge in a `WWW-Authenticate` value (which may hold several
/// challenges of several schemes); `None` when there is none.
pub fn parse_bearer(header: &str) -> Option<BearerChallenge> {
    let mut p = Parser {
        s: header.as_bytes(),
        i: 0,
    };
    loop {
        p.skip(|c| c == b',' || c.is_ascii_whitespace());
        let scheme = p.token()?;
        let params = p.params();
        if scheme.eq_ignore_ascii_case("bearer") {
            let mut c = BearerChallenge::default();
            for (name, value) in params {
                let slot = match name.to_ascii_lowercase().as_str() {
                    "resource_metadata" => &mut c.resource_metadata,
                    "scope" => &mut c.scope,
                    "error" => &mut c.error,
                    "error_description" => &mut c.error_description,
                    _ => continue,
                };
                // The first occurrence wins (a repeated parameter is invalid anyway).
                slot.get_or_insert(value);
            }
            return Some(c);
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip(&mut self, f: impl Fn(u8) -> bool) {
        while self.peek().is_some_and(&f) {
            self.i += 1;
        }
    }

    fn token(&mut self) -> Option<String> {
        let start = self.i;
        self.skip(is_tchar);
        (self.i > start).then(|| String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    /// `name=value` pairs (or a token68, skipped) up to the next challenge or the end.
    fn params(&mut self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        loop {
            self.skip(|c| c == b',' || c.is_ascii_whitespace());
            let mark = self.i;
            let Some(name) = self.token() else {
                // Not a token: a token68's tail ("abc==") or garbage; skip to a comma.
                if self.peek().is_none() {
                    return out;
                }
                self.skip(|c| c != b',');
                continue;
            };
            self.skip(|c| c == b' ' || c == b'\t');
            if self.peek() != Some(b'=') {
                // The next challenge's scheme.
                self.i = mark;
                return out;
            }
            self.i += 1;
            self.skip(|c| c == b' ' || c == b'\t');
            let value = match self.peek() {
                Some(b'"') => self.quoted(),
                // `token68=` (padding) followed by a comma or the end: not a parameter.
                Some(b',') | None => continue,
                _ => self.token().unwrap_or_default(),
            };
            out.push((name, value));
        }
    }

    fn quoted(&mut self) -> String {
        self.i += 1; // the opening quote
        let mut v = Vec::new();
        while let Some(c) = self.peek() {
            self.i += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    if let Some(n) = self.peek() {
                        v.push(n);
                        self.i += 1;
                    }
                }
                _ => v.push(c),
            }
        }
        String::from_utf8_lossy(&v).into_owned()
    }
}

/// RFC 9110 `tchar`.
fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mcp_style_challenge() {
        let c = parse_bearer(
            r#"Bearer resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp", scope="files:read files:write""#,
        )
        .unwrap();
        assert_eq!(
            c.resource_metadata.as_deref(),
            Some("https://mcp.example.com/.well-known/oauth-protected-resource/mcp")
        );
        assert_eq!(c.scope.as_deref(), Some("files:read files:write"));
        assert!(!c.insufficient_scope());
    }

    #[test]
    fn step_up_and_escapes() {
        let c = parse_bearer(
            r#"Bearer error="insufficient_scope", scope="a b", error_description="needs \"b\"""#,
        )
        .unwrap();
        assert!(c.insufficient_scope());
        assert_eq!(c.error_description.as_deref(), Some(r#"needs "b""#));
    }

    #[test]
    fn step_up_asks_for_held_plus_missing_scopes_only_when_something_is_missing() {
        let c = parse_bearer(r#"Bearer error="insufficient_scope", scope="mcp:basic mcp:write""#)
            .unwrap();
        assert_eq!(
            c.step_up_scope(Some("mcp:basic")).as_deref(),
            Some("mcp:basic mcp:write")
        );
        assert_eq!(
            c.step_up_scope(Some("other")).as_deref(),
            Some("other mcp:basic mcp:write")
        );
        assert_eq!(c.step_up_scope(Some("mcp:write mcp:basic")), None);
        assert_eq!(
            c.step_up_scope(None).as_deref(),
            Some("mcp:basic mcp:write")
        );
        let no_scope = parse_bearer(r#"Bearer error="insufficient_scope""#).unwrap();
        assert_eq!(no_scope.step_up_scope(Some("a")), None);
        let not_403 = parse_bearer(r#"Bearer scope="x""#).unwrap();
        assert_eq!(not_403.step_up_scope(None), None);
    }

    #[test]
    fn bearer_after_other_schemes_and_token_values() {
        let c =
            parse_bearer(r#"Basic realm="x", Newauth abc==, BEARER error=invalid_token, realm=y"#)
                .unwrap();
        assert_eq!(c.error.as_deref(), Some("invalid_token"));
        assert_eq!(c.resource_metadata, None);
    }

    #[test]
    fn bare_bearer_and_none() {
        assert_eq!(parse_bearer("Bearer"), Some(BearerChallenge::default()));
        assert_eq!(parse_bearer(r#"Basic realm="a""#), None);
        assert_eq!(parse_bearer(""), None);
        assert_eq!(parse_bearer(",,, \"\"="), None);
    }

    #[test]
    fn malformed_input_never_panics() {
        for s in [
            "Bearer scope=\"unterminated",
            "Bearer =x",
            "Bearer a=\"\\",
            "Bearer , , error=",
            "\u{1F600} Bearer scope=a",
        ] {
            let _ = parse_bearer(s);
        }
        assert_eq!(
            parse_bearer("Bearer scope=\"unterminated")
                .unwrap()
                .scope
                .as_deref(),
            Some("unterminated")
        );
    }
}
