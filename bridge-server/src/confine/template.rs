//! Per-user values in a tool's config: `{user}` and `{tool}` in `args`, `env`, `env_files`,
//! `cwd` and the sandbox's paths, filled in for each session. `{{` and `}}` are literal braces.
//!
//! A user name comes from outside (a token's user, a JWT claim), so it is only put into a
//! command line or a path when it is a plain name: letters, digits and `.`, `_`, `-`, `@`, `+`,
//! not starting with `.` or `-`. Anything else refuses the session (never a path like `../bob`).

use std::fmt;

/// The placeholders a template may use.
pub const PLACEHOLDERS: &[&str] = &["user", "tool"];

/// Longest user name accepted into a template.
const MAX_USER: usize = 128;

/// Why a template is not valid (found when the config is read).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `{name}` names no placeholder.
    #[error("`{{{0}}}` is not a placeholder: use {{user}} or {{tool}} (write {{{{ and }}}} for literal braces)")]
    Unknown(String),
    /// A `{` with no `}`, or a lone `}`.
    #[error("unbalanced brace: write {{{{ and }}}} for literal braces")]
    Unbalanced,
}

/// A user name that cannot be put into a tool's command line or paths.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the user name {0:?} cannot be used in this tool's paths or arguments: a name is 1-128 \
     letters, digits, `.`, `_`, `-`, `@` or `+`, not starting with `.` or `-`; ask the relay's \
     operator to map this user to such a name"
)]
pub struct UnsafeUser(pub String);

/// The values of one session.
#[derive(Debug, Clone, Copy)]
pub struct Vars<'a> {
    /// The authenticated user's name.
    pub user: &'a str,
    /// The tool's name.
    pub tool: &'a str,
}

impl Vars<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        match name {
            "user" => Some(self.user),
            "tool" => Some(self.tool),
            _ => None,
        }
    }
}

/// Checks a template; returns whether it uses `{user}`.
pub fn check(template: &str) -> Result<bool, TemplateError> {
    let mut uses_user = false;
    walk(template, |piece| {
        if let Piece::Var(name) = piece {
            if !PLACEHOLDERS.contains(&name) {
                return Err(TemplateError::Unknown(name.to_owned()));
            }
            uses_user |= name == "user";
        }
        Ok(())
    })?;
    Ok(uses_user)
}

/// The template with the session's values filled in.
pub fn expand(template: &str, vars: Vars<'_>) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(template.len());
    walk(template, |piece| {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Var(name) => {
                if name == "user" && !safe_user(vars.user) {
                    return Err(ExpandError::User(UnsafeUser(vars.user.to_owned())));
                }
                match vars.get(name) {
                    Some(v) => out.push_str(v),
                    None => return Err(ExpandError::Template(TemplateError::Unknown(name.into()))),
                }
            }
        }
        Ok(())
    })?;
    Ok(out)
}

/// Why a template could not be filled in for a session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    /// The template itself is wrong (caught at config time; here for completeness).
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// The user's name cannot be used.
    #[error(transparent)]
    User(#[from] UnsafeUser),
}

/// The part of a templated path before the first component that holds `{user}`: the folder
/// that holds every user's own folder or file (`/srv/mcp/{user}/work` → `/srv/mcp`). `None` if
/// the template does not use `{user}`, or uses it in its first component.
pub fn users_root(template: &str) -> Option<String> {
    let at = template.find("{user}")?;
    let head = &template[..at];
    let cut = head.rfind('/')?;
    let root = &template[..cut];
    (!root.is_empty() && !root.contains('{')).then(|| root.to_owned())
}

/// Whether `user` is a plain name, safe as one path component and as one argument.
pub fn safe_user(user: &str) -> bool {
    (1..=MAX_USER).contains(&user.len())
        && !user.starts_with(['.', '-'])
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@' | b'+'))
}

enum Piece<'a> {
    Text(&'a str),
    Var(&'a str),
}

fn walk<'a, E: From<TemplateError>>(
    template: &'a str,
    mut each: impl FnMut(Piece<'a>) -> Result<(), E>,
) -> Result<(), E> {
    let mut rest = template;
    while let Some(i) = rest.find(['{', '}']) {
        if i > 0 {
            each(Piece::Text(&rest[..i]))?;
        }
        let tail = &rest[i..];
        if let Some(t) = tail.strip_prefix("{{") {
            each(Piece::Text("{"))?;
            rest = t;
        } else if let Some(t) = tail.strip_prefix("}}") {
            each(Piece::Text("}"))?;
            rest = t;
        } else if tail.starts_with('}') {
            return Err(TemplateError::Unbalanced.into());
        } else {
            let Some(end) = tail.find('}') else {
                return Err(TemplateError::Unbalanced.into());
            };
            let name = &tail[1..end];
            if name.contains('{') {
                return Err(TemplateError::Unbalanced.into());
            }
            each(Piece::Var(name))?;
            rest = &tail[end + 1..];
        }
    }
    if !rest.is_empty() {
        each(Piece::Text(rest))?;
    }
    Ok(())
}

impl fmt::Display for Vars<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "user={} tool={}", shared::log_safe(self.user), self.tool)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: Vars<'static> = Vars {
        user: "alice",
        tool: "files",
    };

    #[test]
    fn placeholders_are_filled_in_and_braces_escaped() {
        assert_eq!(
            expand("/srv/{user}/x", ALICE).as_deref(),
            Ok("/srv/alice/x")
        );
        assert_eq!(expand("{tool}-{user}", ALICE).as_deref(), Ok("files-alice"));
        assert_eq!(expand("{{user}}", ALICE).as_deref(), Ok("{user}"));
        assert_eq!(expand("plain", ALICE).as_deref(), Ok("plain"));
        assert_eq!(check("/srv/{user}"), Ok(true));
        assert_eq!(check("/srv/{tool}"), Ok(false));
    }

    #[test]
    fn bad_templates_are_refused_with_the_reason() {
        assert_eq!(check("{usr}"), Err(TemplateError::Unknown("usr".into())));
        assert_eq!(check("{user"), Err(TemplateError::Unbalanced));
        assert_eq!(check("a}b"), Err(TemplateError::Unbalanced));
        assert_eq!(check("{{user}"), Err(TemplateError::Unbalanced));
    }

    #[test]
    fn a_user_name_that_could_escape_its_folder_is_refused() {
        for bad in [
            "../bob", "a/b", "..", ".hidden", "-rf", "", "a b", "a\nb", "ü",
        ] {
            let vars = Vars {
                user: bad,
                tool: "t",
            };
            assert!(
                matches!(expand("/srv/{user}", vars), Err(ExpandError::User(_))),
                "{bad:?}"
            );
        }
        // A template without {user} does not care.
        let vars = Vars {
            user: "../bob",
            tool: "t",
        };
        assert_eq!(expand("/srv/{tool}", vars).as_deref(), Ok("/srv/t"));
        assert!(safe_user("alice@example.com"));
        assert!(safe_user("bob.smith+ci"));
    }

    #[test]
    fn the_users_root_is_the_folder_above_the_user_component() {
        assert_eq!(
            users_root("/srv/mcp/{user}/work").as_deref(),
            Some("/srv/mcp")
        );
        assert_eq!(users_root("/srv/mcp/u-{user}").as_deref(), Some("/srv/mcp"));
        assert_eq!(users_root("/srv/mcp/{tool}"), None);
        assert_eq!(users_root("{user}/x"), None);
        assert_eq!(users_root("/{user}"), None);
    }
}
