//! Which client to sign in as, in the MCP spec's order — pre-registered, Client ID Metadata
//! Document, Dynamic Client Registration (RFC 7591) — and the registration request and answer.
//! Sans-IO; the POST itself is made by [`super::authorizer`].

use serde::Deserialize;
use serde_json::json;

use super::metadata::ServerMetadata;
use super::tokens::{AuthMethod, Client};
use super::AuthError;
use crate::Secret;

/// The name the authorization server shows on its consent screen.
pub const CLIENT_NAME: &str = "mcp-bridge (bridge-client)";

/// A client the user configured.
#[derive(Clone, Default)]
pub struct Preconfigured {
    /// `--oauth-client-id`.
    pub client_id: Option<String>,
    /// From `--oauth-client-secret-file` or the environment.
    pub client_secret: Option<Secret>,
    /// `--oauth-client-metadata-url`: an https URL serving our Client ID Metadata Document.
    pub metadata_document: Option<String>,
}

impl std::fmt::Debug for Preconfigured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Preconfigured")
            .field("client_id", &self.client_id)
            .field("has_secret", &self.client_secret.is_some())
            .field("metadata_document", &self.metadata_document)
            .finish()
    }
}

/// What to do for a client id.
#[derive(Debug)]
pub enum Choice {
    /// Use this client as is.
    Ready(Client),
    /// Register one at this endpoint.
    Register(String),
}

/// Picks the client for `server`, in the spec's priority order.
pub fn choose(pre: &Preconfigured, server: &ServerMetadata) -> Result<Choice, AuthError> {
    if let Some(id) = &pre.client_id {
        let auth_method = match &pre.client_secret {
            None => AuthMethod::None,
            Some(_) => confidential_method(server),
        };
        return Ok(Choice::Ready(Client {
            client_id: id.clone(),
            client_secret: pre.client_secret.as_ref().map(|s| s.expose().to_owned()),
            auth_method,
            redirect_uri: None,
            registered: false,
        }));
    }
    if let Some(doc) = &pre.metadata_document {
        if server.client_id_metadata_document_supported {
            return Ok(Choice::Ready(Client {
                client_id: doc.clone(),
                client_secret: None,
                auth_method: AuthMethod::None,
                redirect_uri: None,
                registered: false,
            }));
        }
        tracing::info!(
            issuer = %server.issuer,
            "the authorization server does not accept Client ID Metadata Documents; registering"
        );
    }
    match &server.registration_endpoint {
        Some(e) => Ok(Choice::Register(e.clone())),
        None => Err(AuthError::NoClient {
            issuer: server.issuer.clone(),
        }),
    }
}

/// Basic if offered (or nothing listed), else post.
fn confidential_method(server: &ServerMetadata) -> AuthMethod {
    if server.accepts_auth("client_secret_basic") || !server.accepts_auth("client_secret_post") {
        AuthMethod::ClientSecretBasic
    } else {
        AuthMethod::ClientSecretPost
    }
}

/// The RFC 7591 request: a native public client when the server takes `none`, else a
/// confidential one with the method it offers. `redirect_uri` None: device grant only.
pub fn request(server: &ServerMetadata, redirect_uri: Option<&str>) -> serde_json::Value {
    let method = if server.accepts_auth("none") {
        AuthMethod::None
    } else {
        confidential_method(server)
    };
    let (grants, redirects, responses) = match redirect_uri {
        Some(r) => (
            vec!["authorization_code", "refresh_token"],
            vec![r.to_owned()],
            vec!["code"],
        ),
        None => (
            vec![
                "urn:ietf:params:oauth:grant-type:device_code",
                "refresh_token",
            ],
            vec![],
            vec![],
        ),
    };
    json!({
        "client_name": CLIENT_NAME,
        "application_type": "native",
        "redirect_uris": redirects,
        "grant_types": grants,
        "response_types": responses,
        "token_endpoint_auth_method": method.as_str(),
    })
}

#[derive(Deserialize)]
struct Registered {
    client_id: String,
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    token_endpoint_auth_method: Option<String>,
}

/// Reads the registration answer (RFC 7591 §3.2.1).
pub fn response(status: u16, body: &[u8], redirect_uri: Option<&str>) -> Result<Client, AuthError> {
    if !(200..300).contains(&status) {
        return Err(
            match serde_json::from_slice::<super::tokens::ErrorResponse>(body) {
                Ok(e) => e.into_error("the registration endpoint"),
                Err(_) => AuthError::Metadata(format!(
                    "the registration endpoint answered HTTP {status}; register a client by \
                     hand and pass --oauth-client-id"
                )),
            },
        );
    }
    let r: Registered = serde_json::from_slice(body).map_err(|_| {
        AuthError::Metadata("the registration endpoint's answer has no client_id".into())
    })?;
    let auth_method = match (r.token_endpoint_auth_method.as_deref(), &r.client_secret) {
        (Some("client_secret_post"), Some(_)) => AuthMethod::ClientSecretPost,
        (Some("none"), _) | (_, None) => AuthMethod::None,
        _ => AuthMethod::ClientSecretBasic,
    };
    Ok(Client {
        client_id: r.client_id,
        client_secret: r.client_secret,
        auth_method,
        redirect_uri: redirect_uri.map(str::to_owned),
        registered: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(extra: serde_json::Value) -> ServerMetadata {
        let mut v = json!({
            "issuer": "https://a",
            "token_endpoint": "https://a/token",
            "code_challenge_methods_supported": ["S256"],
        });
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn priority_order() {
        let s = server(json!({
            "registration_endpoint": "https://a/reg",
            "client_id_metadata_document_supported": true,
            "token_endpoint_auth_methods_supported": ["client_secret_post"],
        }));
        let pre = Preconfigured {
            client_id: Some("pre".into()),
            client_secret: Some(Secret::new("s".into())),
            metadata_document: Some("https://me.example/client.json".into()),
        };
        match choose(&pre, &s).unwrap() {
            Choice::Ready(c) => {
                assert_eq!(c.client_id, "pre");
                assert_eq!(c.auth_method, AuthMethod::ClientSecretPost);
            }
            other => panic!("{other:?}"),
        }
        let cimd = Preconfigured {
            client_id: None,
            ..pre.clone()
        };
        match choose(&cimd, &s).unwrap() {
            Choice::Ready(c) => assert_eq!(c.client_id, "https://me.example/client.json"),
            other => panic!("{other:?}"),
        }
        let no_cimd = server(json!({"registration_endpoint": "https://a/reg"}));
        assert!(matches!(
            choose(&cimd, &no_cimd).unwrap(),
            Choice::Register(_)
        ));
        let nothing = server(json!({}));
        assert!(matches!(
            choose(&Preconfigured::default(), &nothing),
            Err(AuthError::NoClient { .. })
        ));
    }

    #[test]
    fn registration_request_and_answer() {
        let s = server(
            json!({"token_endpoint_auth_methods_supported": ["none", "client_secret_basic"]}),
        );
        let r = request(&s, Some("http://127.0.0.1:1/cb/x"));
        assert_eq!(r["token_endpoint_auth_method"], "none");
        assert_eq!(r["application_type"], "native");
        assert_eq!(r["redirect_uris"][0], "http://127.0.0.1:1/cb/x");
        let c = response(201, br#"{"client_id":"abc"}"#, Some("http://x")).unwrap();
        assert_eq!(c.auth_method, AuthMethod::None);
        assert!(c.registered);
        let c = response(
            201,
            br#"{"client_id":"abc","client_secret":"s","token_endpoint_auth_method":"client_secret_basic"}"#,
            None,
        )
        .unwrap();
        assert_eq!(c.auth_method, AuthMethod::ClientSecretBasic);
        let e = response(400, br#"{"error":"invalid_redirect_uri"}"#, None).unwrap_err();
        assert!(e.to_string().contains("invalid_redirect_uri"));
    }
}
