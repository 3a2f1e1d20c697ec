//! [`Authorizer`]: the I/O shell over the sans-IO parts — discovery, sign-in (browser or
//! device), refresh, the keyring and the cross-process lock — behind the two calls an HTTP
//! upstream needs, [`Authorizer::bearer`] and [`Authorizer::on_unauthorized`], plus `login`
//! and `check` for the command line.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;
use url::Url;

use super::challenge::{parse_bearer, BearerChallenge};
use super::flow;
use super::http::Http;
use super::metadata::{self, ResourceMetadata, ServerMetadata};
use super::options::Options;
use super::pkce::random_string;
use super::signin::{self, Found};
use super::store;
use super::tokens::{self, unix_now, Freshness, Record};
use super::AuthError;
use crate::Secret;

/// A token obtained this recently is not refreshed or replaced on a 401: the server refuses
/// fresh tokens, and trying again would loop.
const RECENT: Duration = Duration::from_secs(60);

/// Step-up sign-ins (a 403 `insufficient_scope` naming scopes the tokens lack) allowed in a
/// row, each within [`RECENT`] of the one before: the spec asks clients to bound them, and a
/// server that keeps naming new scopes must not keep the browser opening.
const MAX_STEP_UPS: u32 = 2;

/// Signs in to one MCP server and keeps its tokens fresh. One per upstream; cheap to share
/// behind an `Arc`. Calls are serialized: a second caller waits while a refresh or a sign-in
/// is under way, then gets its result.
#[derive(Debug)]
pub struct Authorizer {
    server: Url,
    /// The server URL as the keyring binds it (no fragment, no trailing slash).
    key: String,
    opts: Options,
    /// Built at first use: an authorizer that is never needed (a server that asks for no
    /// sign-in) costs no TLS setup at start.
    http: OnceLock<Http>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    record: Option<Record>,
    /// The store was read once (`record` stays `None` when nothing was there).
    looked: bool,
    last_sign_in: Option<Instant>,
    last_refresh: Option<Instant>,
    /// Step-up sign-ins in a row (see [`MAX_STEP_UPS`]).
    step_ups: u32,
    /// This process's counts, for `check`.
    sign_ins: u32,
    refreshes: u32,
}

/// How `login` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginOutcome {
    /// A new sign-in completed here.
    SignedIn {
        /// The authorization server.
        issuer: String,
        /// The resource.
        resource: String,
    },
    /// Another bridge-client signed in while this one waited; its tokens serve.
    Reused {
        /// The authorization server.
        issuer: String,
        /// The resource.
        resource: String,
    },
}

/// What `check` found.
#[derive(Debug, Clone)]
pub struct CheckReport {
    /// The authorization server.
    pub issuer: String,
    /// The resource.
    pub resource: String,
    /// Seconds the access token has left, when known.
    pub expires_in: Option<u64>,
    /// Whether a refresh token is stored.
    pub has_refresh_token: bool,
    /// Refreshes done by this check.
    pub refreshes: u32,
    /// Sign-ins done by this check.
    pub sign_ins: u32,
}

fn recent(t: Option<Instant>) -> bool {
    t.is_some_and(|t| t.elapsed() < RECENT)
}

fn is_fresh(r: &Record) -> bool {
    r.freshness(unix_now()) == Freshness::Fresh
}

/// The server URL as bound in the keyring.
pub(super) fn server_key(url: &Url) -> String {
    let mut u = url.clone();
    u.set_fragment(None);
    u.as_str().trim_end_matches('/').to_owned()
}

/// Parses an MCP server URL for sign-in: https, or http to a loopback host.
pub fn parse_server(url: &str) -> Result<Url, AuthError> {
    let u = Url::parse(url).map_err(|e| AuthError::BadUrl(format!("{url:?} is not a URL: {e}")))?;
    match u.scheme() {
        "https" => Ok(u),
        "http" if metadata::is_loopback(&u) => Ok(u),
        "http" => Err(AuthError::BadUrl(format!(
            "{url} is plain http to a remote host: tokens would travel in clear; use https://"
        ))),
        _ => Err(AuthError::BadUrl(format!("{url} is not an http(s) URL"))),
    }
}

impl State {
    /// `Authorizer::load` with the keyring read as `read`: a failed read counts as looked too.
    fn load_with(
        &mut self,
        again: bool,
        read: impl FnOnce() -> Result<Option<Record>, AuthError>,
    ) -> Result<(), AuthError> {
        if self.record.is_none() && (again || !self.looked) {
            self.looked = true;
            self.record = read()?;
        }
        Ok(())
    }
}

impl Authorizer {
    /// An authorizer for the MCP server at `server_url`.
    pub fn new(server_url: &str, opts: Options) -> Result<Authorizer, AuthError> {
        let server = parse_server(server_url)?;
        Ok(Authorizer {
            key: server_key(&server),
            server,
            opts,
            http: OnceLock::new(),
            state: Mutex::new(State::default()),
        })
    }

    /// How long an IDE's request waits for `on_unauthorized` ([`Options::ide_wait`]).
    pub fn ide_wait(&self) -> Duration {
        self.opts.ide_wait()
    }

    /// The HTTP client, built at first use.
    fn http(&self) -> Result<&Http, AuthError> {
        if let Some(h) = self.http.get() {
            return Ok(h);
        }
        let h = Http::new(self.opts.ca_file.as_deref())?;
        Ok(self.http.get_or_init(|| h))
    }

    /// The MCP server.
    pub fn server(&self) -> &Url {
        &self.server
    }

    /// The access token to send, refreshed first when it is about to expire; `None` when not
    /// signed in (send the request without one, and pass the 401 to `on_unauthorized`).
    pub async fn bearer(&self) -> Result<Option<Secret>, AuthError> {
        let mut st = self.state.lock().await;
        self.load(&mut st, false)?;
        let Some(rec) = &st.record else {
            return Ok(None);
        };
        match rec.freshness(unix_now()) {
            Freshness::Fresh => Ok(Some(rec.bearer())),
            Freshness::Expired => Ok(None),
            Freshness::Refresh => match self.refresh(&mut st).await {
                Ok(()) => Ok(st.record.as_ref().map(Record::bearer)),
                Err(e) if e.is_invalid_grant() => Ok(None),
                Err(AuthError::NotSignedIn(_)) => Ok(None),
                Err(e) => Err(e),
            },
        }
    }

    /// After a 401 (or a 403 `insufficient_scope`) with this `WWW-Authenticate` value: tokens
    /// another process stored, else a refresh, else one new sign-in — never twice within a
    /// minute (then [`AuthError::Refused`]).
    pub async fn on_unauthorized(&self, www_authenticate: &str) -> Result<Secret, AuthError> {
        let challenge = parse_bearer(www_authenticate).unwrap_or_default();
        let mut st = self.state.lock().await;
        self.load(&mut st, true)?;
        if !challenge.insufficient_scope() {
            if let Some(rec) = st.record.clone() {
                if let Some(stored) = store::load(&rec.issuer, &rec.resource)? {
                    if stored.generation != rec.generation && is_fresh(&stored) {
                        st.record = Some(stored);
                        return self.current(&st);
                    }
                }
                let can_refresh = rec.refresh_token.is_some()
                    && !recent(st.last_refresh)
                    && !recent(st.last_sign_in);
                if can_refresh {
                    match self.refresh(&mut st).await {
                        Ok(()) => return self.current(&st),
                        Err(e) if e.is_invalid_grant() => {}
                        Err(AuthError::NotSignedIn(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        // A 403 naming scopes the tokens lack: sign in again for them (plus what is held).
        let step_up = st
            .record
            .as_ref()
            .and_then(|r| challenge.step_up_scope(r.scope.as_deref()));
        let mut challenge = challenge;
        if let Some(s) = &step_up {
            challenge.scope = Some(s.clone());
        }
        let just_signed_in = recent(st.last_sign_in) && st.record.is_some();
        // Refused only while the token of that sign-in is still held (once a refresh dropped
        // it, invalid_grant, one new sign-in is the way out, not a loop), unless the server
        // asks for scopes that sign-in did not get — a bounded number of times.
        if just_signed_in && (step_up.is_none() || st.step_ups >= MAX_STEP_UPS) {
            return Err(AuthError::Refused {
                url: self.key.clone(),
                reason: shared::log_safe(www_authenticate).into_owned(),
            });
        }
        if !self.opts.interactive {
            return Err(AuthError::NotSignedIn(self.key.clone()));
        }
        if let Some(s) = &step_up {
            tracing::warn!(
                scope = %shared::log_safe(s),
                "the MCP server at {} asks for more scope; signing in again",
                self.key
            );
        }
        st.step_ups = if just_signed_in { st.step_ups + 1 } else { 0 };
        let snapshot = st.record.as_ref().map(|r| r.generation.clone());
        self.sign_in(&mut st, &challenge, snapshot).await?;
        self.current(&st)
    }

    /// `bridge-client login URL`: probes the server and signs in ahead of time (unless another
    /// process did so while this one waited for it). `Ok(None)`: the server does not ask for
    /// an OAuth sign-in.
    pub async fn login(&self) -> Result<Option<LoginOutcome>, AuthError> {
        let Some(challenge) = self.challenge().await? else {
            return Ok(None);
        };
        self.login_with(&challenge).await.map(Some)
    }

    /// `login` after [`Authorizer::challenge`] said the server wants an OAuth sign-in.
    pub async fn login_with(&self, challenge: &BearerChallenge) -> Result<LoginOutcome, AuthError> {
        let snapshot = self.stored()?.map(|r| r.generation);
        let mut st = self.state.lock().await;
        self.sign_in(&mut st, challenge, snapshot).await
    }

    /// The server's Bearer challenge to an unauthenticated request, or `None` when it does not
    /// ask for OAuth (no 401, or a 401 without a Bearer challenge and no resource metadata).
    pub async fn challenge(&self) -> Result<Option<BearerChallenge>, AuthError> {
        let probe = self.http()?.probe(&self.server, None).await?;
        if probe.status != 401 && probe.status != 403 {
            return Ok(None);
        }
        let c = probe.www_authenticate.as_deref().and_then(parse_bearer);
        if c.as_ref().is_some_and(|c| c.resource_metadata.is_some()) {
            return Ok(c);
        }
        for u in metadata::resource_metadata_urls(&self.server) {
            if self
                .http()?
                .get_json::<ResourceMetadata>(&u)
                .await
                .ok()
                .flatten()
                .is_some()
            {
                return Ok(Some(c.unwrap_or_default()));
            }
        }
        Ok(None)
    }

    /// `login --check`: one authenticated request as an upstream would make it (refreshing or
    /// signing in on a 401), and what is stored afterwards.
    pub async fn check(&self) -> Result<CheckReport, AuthError> {
        let mut token = self.bearer().await?;
        let mut tries = 0;
        loop {
            let p = self.http()?.probe(&self.server, token.as_ref()).await?;
            if p.status != 401 && p.status != 403 {
                if !(200..300).contains(&p.status) {
                    return Err(AuthError::Http {
                        url: self.key.clone(),
                        reason: format!("HTTP {} to an authenticated request", p.status),
                    });
                }
                break;
            }
            tries += 1;
            let www = p.www_authenticate.unwrap_or_default();
            if tries > 2 {
                return Err(AuthError::Refused {
                    url: self.key.clone(),
                    reason: shared::log_safe(&www).into_owned(),
                });
            }
            token = Some(self.on_unauthorized(&www).await?);
        }
        let st = self.state.lock().await;
        let rec = st
            .record
            .as_ref()
            .ok_or_else(|| AuthError::NotSignedIn(self.key.clone()))?;
        Ok(CheckReport {
            issuer: rec.issuer.clone(),
            resource: rec.resource.clone(),
            expires_in: rec.expires_at.map(|t| t.saturating_sub(unix_now())),
            has_refresh_token: rec.refresh_token.is_some(),
            refreshes: st.refreshes,
            sign_ins: st.sign_ins,
        })
    }

    /// What the keyring holds for this server.
    fn stored(&self) -> Result<Option<Record>, AuthError> {
        match store::binding(&self.key)? {
            Some(b) => store::load(&b.issuer, &b.resource),
            None => Ok(None),
        }
    }

    /// Reads the stored tokens when none are held: once for `bearer` (a server that needs no
    /// sign-in costs no keyring lookup per request, and a broken keyring one warning), each time
    /// when `again` (after a 401: another process may have signed in meanwhile).
    fn load(&self, st: &mut State, again: bool) -> Result<(), AuthError> {
        st.load_with(again, || self.stored())
    }

    fn current(&self, st: &State) -> Result<Secret, AuthError> {
        st.record
            .as_ref()
            .map(Record::bearer)
            .ok_or_else(|| AuthError::NotSignedIn(self.key.clone()))
    }

    fn resource_param<'a>(&self, resource: &'a str) -> Option<&'a str> {
        (!self.opts.no_resource).then_some(resource)
    }

    /// Refreshes under the cross-process lock, first taking tokens another process stored.
    /// `invalid_grant` drops the stored tokens.
    async fn refresh(&self, st: &mut State) -> Result<(), AuthError> {
        let Some(mine) = st.record.clone() else {
            return Err(AuthError::NotSignedIn(self.key.clone()));
        };
        let _lock = store::lock(&mine.issuer, &mine.resource, self.opts.lock_timeout).await?;
        let Some(rec) = store::load(&mine.issuer, &mine.resource)? else {
            st.record = None;
            return Err(AuthError::NotSignedIn(self.key.clone()));
        };
        if rec.generation != mine.generation && is_fresh(&rec) {
            st.record = Some(rec);
            return Ok(());
        }
        let Some(rt) = rec.refresh_token.clone() else {
            st.record = None;
            return Err(AuthError::NotSignedIn(self.key.clone()));
        };
        let te = metadata::check_endpoint(&rec.token_endpoint, "token endpoint")?;
        let req = flow::refresh(&te, &rec.client, &rt, self.resource_param(&rec.resource));
        let (status, body) = self.http()?.post_form(&req).await?;
        let generation = random_string(12)?;
        let now = unix_now();
        let result =
            tokens::record_from_response(status, &body, Some(&rt), now, |a, r, e, s| Record {
                access_token: a,
                refresh_token: r,
                expires_at: e,
                scope: s.or_else(|| rec.scope.clone()),
                generation,
                ..rec.clone()
            });
        match result {
            Ok(new) => {
                store::save(&self.key, &new)?;
                st.record = Some(new);
                st.last_refresh = Some(Instant::now());
                st.refreshes += 1;
                tracing::info!(issuer = %rec.issuer, "access token refreshed");
                Ok(())
            }
            Err(e) if e.is_invalid_grant() => {
                store::delete(&rec.issuer, &rec.resource)?;
                st.record = None;
                eprintln!(
                    "bridge-client: {} no longer accepts the stored refresh token \
                     (invalid_grant); the stored tokens were dropped and a new sign-in is needed",
                    rec.issuer
                );
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Discovery, the lock, then a sign-in — unless another process stored tokens since
    /// `snapshot` (the generation this caller last saw).
    async fn sign_in(
        &self,
        st: &mut State,
        challenge: &BearerChallenge,
        snapshot: Option<String>,
    ) -> Result<LoginOutcome, AuthError> {
        let found = self.discover(challenge).await?;
        let (issuer, resource) = (found.issuer.clone(), found.resource.clone());
        let _lock = store::lock(&issuer, &resource, self.opts.lock_timeout).await?;
        if let Some(stored) = store::load(&issuer, &resource)? {
            let newer = Some(&stored.generation) != snapshot.as_ref();
            if newer && is_fresh(&stored) && !challenge.insufficient_scope() {
                store::bind(&self.key, &issuer, &resource)?;
                st.record = Some(stored);
                return Ok(LoginOutcome::Reused { issuer, resource });
            }
        }
        let rec = if self.opts.device {
            signin::device(self.http()?, &self.opts, &found).await?
        } else {
            signin::browser(self.http()?, &self.opts, &found).await?
        };
        store::save(&self.key, &rec)?;
        st.record = Some(rec);
        st.last_sign_in = Some(Instant::now());
        st.sign_ins += 1;
        Ok(LoginOutcome::SignedIn { issuer, resource })
    }

    /// RFC 9728 then RFC 8414 / OpenID discovery, with every check the spec asks for.
    async fn discover(&self, c: &BearerChallenge) -> Result<Found, AuthError> {
        let prm: ResourceMetadata = match &c.resource_metadata {
            Some(u) => {
                let u = metadata::check_endpoint(u, "resource metadata URL")?;
                self.http()?.get_json(&u).await?.ok_or_else(|| {
                    AuthError::Metadata(format!(
                        "the resource metadata at {u} could not be fetched"
                    ))
                })?
            }
            None => {
                let mut found = None;
                for u in metadata::resource_metadata_urls(&self.server) {
                    if let Some(m) = self.http()?.get_json(&u).await? {
                        found = Some(m);
                        break;
                    }
                }
                found.ok_or_else(|| AuthError::NoResourceMetadata {
                    url: self.key.clone(),
                })?
            }
        };
        metadata::check_resource(&prm, &self.server)?;
        let issuer = prm.authorization_servers.first().cloned().ok_or_else(|| {
            AuthError::Metadata(format!(
                "the resource metadata of {} names no authorization server",
                self.key
            ))
        })?;
        let issuer_url = metadata::check_endpoint(&issuer, "authorization server")?;
        let mut meta = None;
        for u in metadata::server_metadata_urls(&issuer_url) {
            if let Some(m) = self.http()?.get_json::<ServerMetadata>(&u).await? {
                meta = Some(m);
                break;
            }
        }
        let meta = meta.ok_or_else(|| {
            AuthError::Metadata(format!(
                "{issuer} publishes no authorization server metadata (RFC 8414 or OpenID \
                 discovery)"
            ))
        })?;
        meta.validate(&issuer)?;
        Ok(Found {
            scope: metadata::select_scope(c.scope.as_deref(), &prm),
            issuer,
            resource: prm.resource,
            meta,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_keyring_read_is_not_repeated_for_bearer_only_after_a_401() {
        let mut st = State::default();
        let mut reads = 0;
        let mut failing = |st: &mut State, again| {
            st.load_with(again, || {
                reads += 1;
                Err(AuthError::Store("no keyring".into()))
            })
        };
        assert!(
            failing(&mut st, false).is_err(),
            "the first failure is told"
        );
        assert!(failing(&mut st, false).is_ok(), "not read (nor told) again");
        assert!(failing(&mut st, true).is_err(), "a 401 reads again");
        assert_eq!(reads, 2);
    }
}
