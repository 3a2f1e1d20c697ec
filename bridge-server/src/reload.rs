//! Config reloads while the relay runs: on SIGHUP, and whenever the contents of the config file
//! or of its TLS certificate and key change (read every 2 s and compared by hash, so an
//! editor's save-by-rename and a certificate renewal count too).
//!
//! A valid file puts in force, for new requests and sessions, what can change live: the
//! tools, authentication, the allowed origins, the other nodes and the TLS certificate
//! (renewed certificates are read again). Live sessions keep their tool process; those whose
//! static token is gone, or no longer grants their tool, are ended ("revoked"). An invalid
//! file changes nothing: its problems are logged as `check-config` prints them. What only a
//! restart can change (`listen`, `node_id`, `[metrics]`, `[admin]`, `[limits]`, turning TLS on
//! or off) is named in a warning and left as it is.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio_rustls::TlsAcceptor;
use tracing::{error, info, warn};

use crate::config::{Config, OnRevoke, TlsFiles};
use crate::live::Live;
use crate::session::EndRequest;
use crate::Relay;

/// How often the file is read to see whether it changed.
const POLL: Duration = Duration::from_secs(2);

/// Where the running config came from, and what the command line put over it.
#[derive(Debug, Clone)]
pub struct Reload {
    /// The config file.
    pub path: PathBuf,
    /// `--listen`, which wins over the file's `listen`.
    pub listen: Option<std::net::SocketAddr>,
    /// `--node-id` / `MCP_BRIDGE_NODE_ID`, which wins over the file's `node_id`.
    pub node_id: Option<String>,
}

impl Reload {
    /// Puts the command line's values over the file's, as at start-up.
    pub fn apply_overrides(&self, config: &mut Config) {
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if self.node_id.is_some() {
            config.node_id.clone_from(&self.node_id);
        }
    }
}

/// The TLS acceptor for a certificate, key and optional client CA, read from their files.
pub(crate) fn tls_acceptor(t: &TlsFiles) -> Result<TlsAcceptor, shared::tls::TlsError> {
    shared::tls::server_config(&t.cert, &t.key, t.client_ca.as_deref()).map(TlsAcceptor::from)
}

/// The first 12 hex digits of the SHA-256 of `text`: names a config in logs and metrics.
fn hash_of(text: &[u8]) -> String {
    hex::encode(Sha256::digest(text))[..12].to_owned()
}

/// The hash of the file's contents now; `None` when it cannot be read.
pub(crate) fn file_hash(path: &std::path::Path) -> Option<String> {
    std::fs::read(path).ok().map(|b| hash_of(&b))
}

/// What is watched for changes: the config file and the TLS files it names (`None` while the
/// config file cannot be read).
fn watched(path: &std::path::Path, running: &Config) -> Option<Vec<Option<String>>> {
    let mut all = vec![Some(file_hash(path)?)];
    if let Some(t) = &running.tls {
        for f in [Some(&t.cert), Some(&t.key), t.client_ca.as_ref()]
            .into_iter()
            .flatten()
        {
            all.push(file_hash(f));
        }
    }
    Some(all)
}

/// Watches for SIGHUP and changes of the file until the relay drains. `running` is the config
/// the relay started with (the command line's overrides applied).
pub(crate) async fn watch(relay: Arc<Relay>, reload: Reload, mut running: Config) {
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!("cannot listen for SIGHUP ({e}); config changes are still noticed in the file");
            None
        }
    };
    // Reading and hashing files, and building a config (its key files, CA bundles, HTTP
    // clients), is blocking work: it runs on the blocking pool, not on a runtime worker.
    let mut seen = watched_off_runtime(&reload, &running).await;
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let trigger = tokio::select! {
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => None } } => "signal",
            _ = tick.tick() => {
                let now = watched_off_runtime(&reload, &running).await;
                if now == seen || now.is_none() {
                    continue;
                }
                "file"
            }
            () = relay.shutdown.drain.cancelled() => return,
        };
        let (r, rl) = (relay.clone(), reload.clone());
        let applied = tokio::task::spawn_blocking(move || {
            apply(&r, &rl, &mut running, trigger);
            running
        })
        .await;
        running = match applied {
            Ok(config) => config,
            Err(e) => {
                error!("config reloading stopped: {e}; restart the relay to reload its config");
                return;
            }
        };
        seen = watched_off_runtime(&reload, &running).await;
    }
}

/// [`watched`] on the blocking pool.
async fn watched_off_runtime(reload: &Reload, running: &Config) -> Option<Vec<Option<String>>> {
    let (path, config) = (reload.path.clone(), running.clone());
    tokio::task::spawn_blocking(move || watched(&path, &config))
        .await
        .ok()
        .flatten()
}

/// A refused reload: the hash of the file (when it could be read), and what the log line says
/// after "config reload refused: ".
struct Refused {
    hash: Option<String>,
    message: String,
}

/// Reads the file and, if it is valid, puts it in force; a refusal is logged and counted.
fn apply(relay: &Relay, reload: &Reload, running: &mut Config, trigger: &'static str) {
    let Err(r) = try_apply(relay, reload, running, trigger) else {
        return;
    };
    match &r.hash {
        Some(hash) => error!(%trigger, config_hash = %hash, "config reload refused: {}", r.message),
        None => error!(%trigger, "config reload refused: {}", r.message),
    }
    relay.metrics.config_reload("error");
}

/// [`apply`] but for the logging of a refusal: every refusal is one [`Refused`].
fn try_apply(
    relay: &Relay,
    reload: &Reload,
    running: &mut Config,
    trigger: &'static str,
) -> Result<(), Refused> {
    let path = reload.path.display();
    let text = std::fs::read(&reload.path).map_err(|e| Refused {
        hash: None,
        message: format!("cannot read {path}: {e}; the previous config stays in force"),
    })?;
    let hash = hash_of(&text);
    let refused = |why: String| Refused {
        hash: Some(hash.clone()),
        message: format!("{why}; the previous config stays in force"),
    };
    let parsed = std::str::from_utf8(&text)
        .map_err(|e| format!("{path} is not UTF-8 text: {e}"))
        .and_then(|t| {
            Config::parse(t, &reload.path).map_err(|e| {
                e.problems()
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        });
    let mut config = match parsed {
        Ok(loaded) => {
            for w in &loaded.warnings {
                warn!("{w}");
            }
            loaded.config
        }
        Err(problems) => {
            return Err(Refused {
                hash: Some(hash),
                message: format!(
                    "{path} is invalid; the previous config stays in force:\n{problems}"
                ),
            })
        }
    };
    reload.apply_overrides(&mut config);
    crate::preflight(&config).map_err(|why| refused(why.to_string()))?;
    let old = relay.live();
    let mut restart = needs_restart(running, &config);
    let tls = match (&old.tls, &config.tls) {
        (Some(_), Some(files)) => match tls_acceptor(files) {
            Ok(acceptor) => Some(acceptor),
            Err(e) => return Err(refused(format!("[tls]: {e}"))),
        },
        (Some(tls), None) => {
            restart.push("[tls] (turning TLS off)");
            Some(tls.clone())
        }
        (None, Some(_)) => {
            restart.push("[tls] (turning TLS on)");
            None
        }
        (None, None) => None,
    };
    let resource = crate::live::resource_of(
        &mut config,
        relay.local,
        Some(&old),
        &relay.metrics,
        &relay.shutdown.force,
    )
    .map_err(|why| refused(why.to_string()))?;
    relay
        .live
        .set(Live::of(&config, tls, resource, hash.clone()));
    relay.host.hide_also(&config);
    old.retire_keys(&relay.live());
    let before: Vec<&str> = old.tools.iter().map(|t| t.name.as_str()).collect();
    relay
        .metrics
        .set_tool_limits(&relay.limits, &config.tools, &before);
    let revoked = revoke(relay);
    relay.metrics.config_reload("ok");
    relay.metrics.config_loaded(Some(&old.hash), &hash);
    let tools: Vec<&str> = config.tools.iter().map(|t| t.name.as_str()).collect();
    info!(%trigger, config_hash = %hash, previous = %old.hash, tools = %tools.join(","), revoked, "config reloaded");
    if !restart.is_empty() {
        warn!(
            config_hash = %hash,
            "{path} changes {} too: that takes a restart; until then the relay keeps the values it started with",
            restart.join(", ")
        );
    }
    *running = config;
    Ok(())
}

/// What changed between `old` and `new` that only a restart can apply.
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    if old.listen != new.listen {
        out.push("listen");
    }
    if old.node_id != new.node_id {
        out.push("node_id");
    }
    if old.metrics_listen != new.metrics_listen {
        out.push("[metrics]");
    }
    if old.admin_tokens.len() != new.admin_tokens.len()
        || old
            .admin_tokens
            .iter()
            .zip(&new.admin_tokens)
            .any(|(a, b)| a.sha256 != b.sha256 || a.user != b.user)
    {
        out.push("[admin]");
    }
    if old.limits != new.limits {
        out.push("[limits]");
    }
    out
}

/// Ends the live sessions the config in force no longer admits; how many.
fn revoke(relay: &Relay) -> usize {
    let live = relay.live();
    let mut ended = 0;
    for s in relay.registry.list() {
        if live
            .auth
            .still_admits(&s.user, s.credential.as_ref(), &s.tool)
        {
            continue;
        }
        let when = match live.on_revoke {
            OnRevoke::End if s.request_end(EndRequest::Revoked) => "now",
            OnRevoke::End => continue, // already ending
            OnRevoke::NextCall => {
                s.revoke_after_next_call();
                "after_next_call"
            }
        };
        ended += 1;
        warn!(target: "audit", event = "revoked", user = %s.user, tool = %s.tool, session = %crate::session::short_id(&s.id), when, "the reloaded config no longer admits this session's credentials; ending it");
    }
    ended
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(top: &str, limits: &str) -> Config {
        let text =
            format!("{top}\n[limits]\n{limits}\n[[tool]]\nname = \"a\"\ncommand = \"/bin/sh\"\n");
        Config::parse(&text, std::path::Path::new("relay.toml"))
            .expect("valid")
            .config
    }

    #[test]
    fn only_what_takes_a_restart_is_named() {
        let base = config("", "");
        assert!(needs_restart(&base, &config("", "")).is_empty());
        assert_eq!(
            needs_restart(&base, &config("", "max_sessions = 7")),
            ["[limits]"]
        );
        assert_eq!(
            needs_restart(&base, &config("listen = \"127.0.0.1:9999\"", "")),
            ["listen"]
        );
    }
}
