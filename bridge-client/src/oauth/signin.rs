//! The interactive part of a sign-in, once discovery is done: a client (given, or registered
//! for this flow), then the browser with the loopback redirect, or the device grant — ending in
//! a token [`Record`]. Not where records are stored or locked ([`super::authorizer`]).

use std::time::Duration;

use super::browser;
use super::callback::Callback;
use super::device::{self, DeviceAuthorization, Poll};
use super::flow::{self, Pending, Plan};
use super::http::Http;
use super::metadata::{self, ServerMetadata};
use super::options::Options;
use super::pkce::random_string;
use super::registration::{self, Choice};
use super::tokens::{self, unix_now, Client, Record};
use super::AuthError;

/// What discovery found.
#[derive(Debug)]
pub(super) struct Found {
    pub(super) issuer: String,
    pub(super) resource: String,
    pub(super) scope: Option<String>,
    pub(super) meta: ServerMetadata,
}

/// `resource` unless `--oauth-no-resource`.
fn resource_param<'a>(opts: &Options, resource: &'a str) -> Option<&'a str> {
    (!opts.no_resource).then_some(resource)
}

async fn register(
    http: &Http,
    endpoint: &str,
    redirect: Option<&str>,
    found: &Found,
) -> Result<Client, AuthError> {
    let u = metadata::check_endpoint(endpoint, "registration endpoint")?;
    let (status, body) = http
        .post_json(&u, &registration::request(&found.meta, redirect))
        .await?;
    registration::response(status, &body, redirect)
}

fn new_record(
    status: u16,
    body: &[u8],
    found: &Found,
    client: Client,
) -> Result<Record, AuthError> {
    let generation = random_string(12)?;
    tokens::record_from_response(status, body, None, unix_now(), |a, r, e, s| Record {
        v: 1,
        issuer: found.issuer.clone(),
        resource: found.resource.clone(),
        client,
        token_endpoint: found.meta.token_endpoint.clone(),
        revocation_endpoint: found.meta.revocation_endpoint.clone(),
        access_token: a,
        refresh_token: r,
        expires_at: e,
        scope: s.or_else(|| found.scope.clone()),
        generation,
    })
}

/// Authorization code with PKCE through the browser and the loopback redirect.
pub(super) async fn browser(
    http: &Http,
    opts: &Options,
    found: &Found,
) -> Result<Record, AuthError> {
    let choice = registration::choose(&opts.client, &found.meta)?;
    // A client registered for this flow gets a path of its own; a pre-registered one
    // the fixed path it was registered with (any port, RFC 8252 §7.3).
    let path = match &choice {
        Choice::Ready(_) => "/callback".to_owned(),
        Choice::Register(_) => format!("/callback/{}", random_string(12)?),
    };
    let cb = Callback::bind(&path).await?;
    let client = match choice {
        Choice::Ready(c) => c,
        Choice::Register(e) => register(http, &e, Some(&cb.redirect_uri), found).await?,
    };
    let endpoint = found
        .meta
        .authorization_endpoint
        .as_deref()
        .ok_or_else(|| {
            AuthError::Unsupported(format!(
                "{} has no authorization endpoint; try --device",
                found.issuer
            ))
        })?;
    let plan = Plan {
        issuer: found.issuer.clone(),
        iss_supported: found.meta.authorization_response_iss_parameter_supported,
        authorization_endpoint: metadata::check_endpoint(endpoint, "authorization endpoint")?,
        scope: found.scope.clone(),
        resource: resource_param(opts, &found.resource).map(str::to_owned),
    };
    let (pending, url) = Pending::start(&plan, &client, &cb.redirect_uri)?;
    browser::open(url.as_str());
    let query = cb.wait(opts.sign_in_timeout).await?;
    let code = pending.on_redirect(&query)?;
    let te = metadata::check_endpoint(&found.meta.token_endpoint, "token endpoint")?;
    let req = pending.exchange(&te, &client, &code, plan.resource.as_deref());
    let (status, body) = http.post_form(&req).await?;
    new_record(status, &body, found, client)
}

/// The device authorization grant (RFC 8628).
pub(super) async fn device(
    http: &Http,
    opts: &Options,
    found: &Found,
) -> Result<Record, AuthError> {
    let endpoint = found
        .meta
        .device_authorization_endpoint
        .as_deref()
        .ok_or_else(|| {
            AuthError::Unsupported(format!(
                "{} does not offer the device authorization grant (RFC 8628); sign in with a \
             browser (leave out --device)",
                found.issuer
            ))
        })?;
    let endpoint = metadata::check_endpoint(endpoint, "device authorization endpoint")?;
    let client = match registration::choose(&opts.client, &found.meta)? {
        Choice::Ready(c) => c,
        Choice::Register(e) => register(http, &e, None, found).await?,
    };
    let resource = resource_param(opts, &found.resource);
    let mut form = Vec::new();
    if let Some(s) = &found.scope {
        form.push(("scope", s.clone()));
    }
    if let Some(r) = resource {
        form.push(("resource", r.to_owned()));
    }
    let req = flow::with_client_auth(&endpoint, &client, form);
    let (status, body) = http.post_form(&req).await?;
    if !(200..300).contains(&status) {
        return Err(
            match serde_json::from_slice::<tokens::ErrorResponse>(&body) {
                Ok(e) => e.into_error("the device authorization endpoint"),
                Err(_) => AuthError::Metadata(format!(
                    "the device authorization endpoint answered HTTP {status}"
                )),
            },
        );
    }
    let da: DeviceAuthorization = serde_json::from_slice(&body)
        .map_err(|_| AuthError::Metadata("the device authorization answer is malformed".into()))?;
    eprintln!(
        "bridge-client: to sign in, open {} and enter the code {}{}",
        shared::log_safe(&da.verification_uri),
        shared::log_safe_max(&da.user_code, 32),
        da.verification_uri_complete
            .as_deref()
            .map(|u| format!(" (or open {})", shared::log_safe(u)))
            .unwrap_or_default()
    );
    let limit = Duration::from_secs(da.expires_in).min(opts.sign_in_timeout);
    let deadline = tokio::time::Instant::now() + limit;
    let mut interval = Duration::from_secs(da.interval.unwrap_or(5).max(1));
    let te = metadata::check_endpoint(&found.meta.token_endpoint, "token endpoint")?;
    loop {
        tokio::time::sleep(interval).await;
        if tokio::time::Instant::now() >= deadline {
            return Err(AuthError::Timeout(limit.as_secs()));
        }
        let mut form = vec![
            ("grant_type", device::GRANT_TYPE.to_owned()),
            ("device_code", da.device_code.clone()),
        ];
        if let Some(r) = resource {
            form.push(("resource", r.to_owned()));
        }
        let req = flow::with_client_auth(&te, &client, form);
        let (status, body) = http.post_form(&req).await?;
        if (200..300).contains(&status) {
            return new_record(status, &body, found, client);
        }
        match device::after_error(status, &body, interval) {
            Poll::Wait(i) => interval = i,
            Poll::Fail(e) => return Err(e),
        }
    }
}
