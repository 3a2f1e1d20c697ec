//! One sign-in as a state machine, sans-IO: the authorization URL (PKCE S256, `state`,
//! `resource`), the checks on the redirect that comes back (`state`, RFC 9207 `iss`, errors),
//! and the token endpoint requests (code exchange, refresh, device polling) with the client
//! authentication the server advertises. Sending them is [`super::http`]'s job.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use url::form_urlencoded;
use url::Url;

use super::pkce::{random_string, Pkce};
use super::tokens::{AuthMethod, Client};
use super::AuthError;
use crate::Secret;

/// What the authorization request needs to know.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The issuer from validated metadata (RFC 9207 compares against it).
    pub issuer: String,
    /// Whether the server promised `iss` on the redirect.
    pub iss_supported: bool,
    /// Where the browser goes.
    pub authorization_endpoint: Url,
    /// Scopes to ask for (None: leave the parameter out).
    pub scope: Option<String>,
    /// RFC 8707 `resource` (None with `--oauth-no-resource`).
    pub resource: Option<String>,
}

/// A started authorization: the secrets to check the redirect and to redeem the code.
pub struct Pending {
    state: String,
    pkce: Pkce,
    issuer: String,
    iss_supported: bool,
    redirect_uri: String,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("issuer", &self.issuer)
            .field("redirect_uri", &self.redirect_uri)
            .finish_non_exhaustive()
    }
}

/// A form POST to an OAuth endpoint; `Debug` hides every value.
pub struct FormRequest {
    /// The endpoint.
    pub url: Url,
    /// Form fields (some secret).
    pub form: Vec<(&'static str, String)>,
    /// `Authorization: Basic` value, for `client_secret_basic`.
    pub basic: Option<Secret>,
}

impl std::fmt::Debug for FormRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.form.iter().map(|(k, _)| *k).collect();
        f.debug_struct("FormRequest")
            .field("url", &self.url.as_str())
            .field("fields", &names)
            .finish_non_exhaustive()
    }
}

impl FormRequest {
    /// The urlencoded body.
    pub fn body(&self) -> String {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.form {
            s.append_pair(k, v);
        }
        s.finish()
    }
}

impl Pending {
    /// Starts an authorization for `client` with `redirect_uri`: returns the secrets to keep
    /// and the URL to open in the browser.
    pub fn start(
        plan: &Plan,
        client: &Client,
        redirect_uri: &str,
    ) -> Result<(Pending, Url), AuthError> {
        let pkce = Pkce::new()?;
        let state = random_string(24)?;
        let mut url = plan.authorization_endpoint.clone();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", &client.client_id)
                .append_pair("redirect_uri", redirect_uri)
                .append_pair("code_challenge", &pkce.challenge)
                .append_pair("code_challenge_method", "S256")
                .append_pair("state", &state);
            if let Some(s) = &plan.scope {
                q.append_pair("scope", s);
            }
            if let Some(r) = &plan.resource {
                q.append_pair("resource", r);
            }
        }
        let pending = Pending {
            state,
            pkce,
            issuer: plan.issuer.clone(),
            iss_supported: plan.iss_supported,
            redirect_uri: redirect_uri.to_owned(),
        };
        Ok((pending, url))
    }

    /// Checks the redirect's query (RFC 6749 §4.1.2, RFC 9207 §2.4 as the MCP spec's table
    /// has it) and returns the authorization code. A response whose `state` or `iss` does not
    /// match is not ours: its `error` is never shown.
    pub fn on_redirect(&self, query: &str) -> Result<Secret, AuthError> {
        let mut state = None;
        let mut iss = None;
        let mut code = None;
        let mut error = None;
        let mut description = None;
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            let slot = match &*k {
                "state" => &mut state,
                "iss" => &mut iss,
                "code" => &mut code,
                "error" => &mut error,
                "error_description" => &mut description,
                _ => continue,
            };
            if slot.is_some() {
                return Err(AuthError::Redirect(format!(
                    "the parameter {k} appears twice"
                )));
            }
            *slot = Some(v.into_owned());
        }
        if state.as_deref() != Some(self.state.as_str()) {
            return Err(AuthError::Redirect(
                "its state does not match this sign-in".into(),
            ));
        }
        match iss {
            Some(i) if i != self.issuer => {
                return Err(AuthError::Redirect(format!(
                    "it comes from the issuer {:?}, not {} (RFC 9207)",
                    shared::log_safe(&i),
                    self.issuer
                )))
            }
            None if self.iss_supported => {
                return Err(AuthError::Redirect(format!(
                    "it lacks the iss parameter that {} promises (RFC 9207)",
                    self.issuer
                )))
            }
            _ => {}
        }
        if let Some(e) = error {
            return Err(AuthError::OAuth {
                endpoint: "the authorization server",
                code: shared::log_safe_max(&e, 64).into_owned(),
                description: description.map(|d| shared::log_safe(&d).into_owned()),
            });
        }
        match code {
            Some(c) if !c.is_empty() => Ok(Secret::new(c)),
            _ => Err(AuthError::Redirect("it carries no code".into())),
        }
    }

    /// The code exchange (RFC 6749 §4.1.3 with the PKCE verifier and `resource`).
    pub fn exchange(
        &self,
        token_endpoint: &Url,
        client: &Client,
        code: &Secret,
        resource: Option<&str>,
    ) -> FormRequest {
        let mut form = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.expose().to_owned()),
            ("redirect_uri", self.redirect_uri.clone()),
            ("code_verifier", self.pkce.verifier.expose().to_owned()),
        ];
        if let Some(r) = resource {
            form.push(("resource", r.to_owned()));
        }
        with_client_auth(token_endpoint, client, form)
    }
}

/// A refresh (RFC 6749 §6), with `resource` (RFC 8707 §2.2).
pub fn refresh(
    token_endpoint: &Url,
    client: &Client,
    refresh_token: &str,
    resource: Option<&str>,
) -> FormRequest {
    let mut form = vec![
        ("grant_type", "refresh_token".to_owned()),
        ("refresh_token", refresh_token.to_owned()),
    ];
    if let Some(r) = resource {
        form.push(("resource", r.to_owned()));
    }
    with_client_auth(token_endpoint, client, form)
}

/// A token revocation (RFC 7009 §2.1), authenticated as the token endpoint is.
pub fn revocation(endpoint: &Url, client: &Client, token: &str, hint: &str) -> FormRequest {
    let form = vec![
        ("token", token.to_owned()),
        ("token_type_hint", hint.to_owned()),
    ];
    with_client_auth(endpoint, client, form)
}

/// Adds the client's authentication: `client_id` in the form (none), plus the secret in the
/// form (post) or in a Basic header with both parts form-encoded (RFC 6749 §2.3.1).
pub fn with_client_auth(
    url: &Url,
    client: &Client,
    mut form: Vec<(&'static str, String)>,
) -> FormRequest {
    let secret = client.client_secret.as_deref().unwrap_or("");
    let basic = match client.auth_method {
        AuthMethod::ClientSecretBasic => {
            let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            let pair = format!("{}:{}", enc(&client.client_id), enc(secret));
            Some(Secret::new(format!("Basic {}", STANDARD.encode(pair))))
        }
        AuthMethod::ClientSecretPost => {
            form.push(("client_id", client.client_id.clone()));
            form.push(("client_secret", secret.to_owned()));
            None
        }
        AuthMethod::None => {
            form.push(("client_id", client.client_id.clone()));
            None
        }
    };
    FormRequest {
        url: url.clone(),
        form,
        basic,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(iss_supported: bool) -> Plan {
        Plan {
            issuer: "https://auth.example.com".into(),
            iss_supported,
            authorization_endpoint: Url::parse("https://auth.example.com/authorize?x=1").unwrap(),
            scope: Some("mcp read".into()),
            resource: Some("https://mcp.example.com/mcp".into()),
        }
    }

    fn client(m: AuthMethod) -> Client {
        Client {
            client_id: "id with space".into(),
            client_secret: Some("p@ss:word".into()),
            auth_method: m,
            redirect_uri: None,
            registered: false,
        }
    }

    fn query(u: &Url, k: &str) -> Option<String> {
        u.query_pairs()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.into_owned())
    }

    fn start(iss: bool) -> (Pending, Url) {
        Pending::start(
            &plan(iss),
            &client(AuthMethod::None),
            "http://127.0.0.1:5/cb/x",
        )
        .unwrap()
    }

    #[test]
    fn authorization_url_has_pkce_state_resource_scope() {
        let (p, u) = start(false);
        assert_eq!(query(&u, "x").as_deref(), Some("1"));
        assert_eq!(query(&u, "code_challenge_method").as_deref(), Some("S256"));
        assert_eq!(
            query(&u, "code_challenge").as_deref(),
            Some(p.pkce.challenge.as_str())
        );
        assert_eq!(query(&u, "state").as_deref(), Some(p.state.as_str()));
        assert_eq!(
            query(&u, "resource").as_deref(),
            Some("https://mcp.example.com/mcp")
        );
        assert_eq!(query(&u, "scope").as_deref(), Some("mcp read"));
        assert!(!u.as_str().contains(p.pkce.verifier.expose()));
        let mut no_resource = plan(false);
        no_resource.resource = None;
        let (_, u) = Pending::start(&no_resource, &client(AuthMethod::None), "http://x").unwrap();
        assert_eq!(query(&u, "resource"), None);
    }

    #[test]
    fn redirect_state_checked_before_anything() {
        let (p, _) = start(false);
        let s = &p.state;
        assert_eq!(
            p.on_redirect(&format!("code=abc&state={s}"))
                .unwrap()
                .expose(),
            "abc"
        );
        assert!(matches!(
            p.on_redirect("code=abc&state=other"),
            Err(AuthError::Redirect(_))
        ));
        assert!(matches!(
            p.on_redirect("code=abc"),
            Err(AuthError::Redirect(_))
        ));
        // Someone else's error is not shown as ours.
        let e = p.on_redirect("error=access_denied&state=zzz").unwrap_err();
        assert!(!e.to_string().contains("access_denied"), "{e}");
        let e = p
            .on_redirect(&format!("error=access_denied&state={s}"))
            .unwrap_err();
        assert!(e.to_string().contains("access_denied"), "{e}");
        assert!(p.on_redirect(&format!("code=a&code=b&state={s}")).is_err());
    }

    #[test]
    fn rfc9207_table() {
        let iss = "https%3A%2F%2Fauth.example.com";
        for supported in [true, false] {
            let (p, _) = start(supported);
            let s = p.state.clone();
            assert!(p
                .on_redirect(&format!("code=c&state={s}&iss={iss}"))
                .is_ok());
            assert!(p
                .on_redirect(&format!("code=c&state={s}&iss=https%3A%2F%2Fevil"))
                .is_err());
            // No case folding or trailing-slash normalization.
            assert!(p
                .on_redirect(&format!(
                    "code=c&state={s}&iss=https%3A%2F%2FAuth.example.com"
                ))
                .is_err());
            assert!(p
                .on_redirect(&format!("code=c&state={s}&iss={iss}%2F"))
                .is_err());
            assert_eq!(
                p.on_redirect(&format!("code=c&state={s}")).is_ok(),
                !supported
            );
        }
    }

    #[test]
    fn code_exchange_and_client_auth() {
        let (p, _) = start(false);
        let te = Url::parse("https://auth.example.com/token").unwrap();
        let code = Secret::new("CODE".into());
        let r = p.exchange(&te, &client(AuthMethod::None), &code, Some("https://r"));
        let body = r.body();
        assert!(body.contains("grant_type=authorization_code"));
        assert!(body.contains(&format!("code_verifier={}", p.pkce.verifier.expose())));
        assert!(body.contains("resource=https%3A%2F%2Fr"));
        assert!(body.contains("client_id=id+with+space") && r.basic.is_none());
        assert!(!body.contains("client_secret"));
        let dbg = format!("{r:?}");
        assert!(
            !dbg.contains("CODE") && !dbg.contains(p.pkce.verifier.expose()),
            "{dbg}"
        );

        let r = refresh(&te, &client(AuthMethod::ClientSecretBasic), "RT", None);
        assert!(!r.body().contains("client_id") && !r.body().contains("resource"));
        // base64("id+with+space:p%40ss%3Aword")
        let want = format!("Basic {}", STANDARD.encode("id+with+space:p%40ss%3Aword"));
        assert_eq!(r.basic.unwrap().expose(), want);

        let r = refresh(&te, &client(AuthMethod::ClientSecretPost), "RT", None);
        assert!(r.body().contains("client_secret=p%40ss%3Aword") && r.basic.is_none());
    }

    #[test]
    fn revocation_names_the_token_and_its_kind_and_authenticates_the_client() {
        let ep = Url::parse("https://auth.example.com/revoke").unwrap();
        let r = revocation(&ep, &client(AuthMethod::None), "RT", "refresh_token");
        assert_eq!(r.url, ep);
        assert_eq!(
            r.body(),
            "token=RT&token_type_hint=refresh_token&client_id=id+with+space"
        );
        let r = revocation(
            &ep,
            &client(AuthMethod::ClientSecretBasic),
            "AT",
            "access_token",
        );
        assert!(r.basic.is_some() && !r.body().contains("client_id"));
        assert!(
            !format!("{r:?}").contains("AT"),
            "the token is not in Debug"
        );
    }
}
