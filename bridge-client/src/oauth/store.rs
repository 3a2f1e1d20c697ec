//! Where sign-ins are kept: one OS-keyring entry per issuer and resource holding the tokens and
//! the client they were issued to (JSON, through [`crate::credentials`]), one entry per MCP
//! server URL naming that issuer and resource (so `logout URL` and a later process find them
//! without the network), and a lock file per issuer and resource that lets one process at a
//! time sign in or refresh.

use std::fs::File;
use std::path::PathBuf;
use std::time::Duration;

use fs4::fs_std::FileExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::tokens::Record;
use super::AuthError;
use crate::{credentials, Secret};

fn store_err(e: credentials::CredentialError) -> AuthError {
    AuthError::Store(e.to_string())
}

/// The keyring key of a record.
pub(super) fn record_key(issuer: &str, resource: &str) -> String {
    format!("oauth:{issuer} {resource}")
}

fn url_key(server: &str) -> String {
    format!("oauth-url:{server}")
}

/// What the per-URL entry says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Binding {
    /// The authorization server.
    pub issuer: String,
    /// The resource.
    pub resource: String,
}

/// The record for `issuer` and `resource`, if any (an unreadable one counts as none).
pub(super) fn load(issuer: &str, resource: &str) -> Result<Option<Record>, AuthError> {
    let Some(raw) = credentials::load(&record_key(issuer, resource)).map_err(store_err)? else {
        return Ok(None);
    };
    match serde_json::from_str::<Record>(raw.expose()) {
        Ok(r) if r.v == 1 && r.issuer == issuer && r.resource == resource => Ok(Some(r)),
        _ => {
            tracing::warn!(issuer, resource, "ignoring an unreadable stored sign-in");
            Ok(None)
        }
    }
}

/// Saves `record` and binds `server` (the URL the user gave) to it.
pub(super) fn save(server: &str, record: &Record) -> Result<(), AuthError> {
    let json = serde_json::to_string(record)
        .map_err(|e| AuthError::Store(format!("cannot encode the sign-in: {e}")))?;
    credentials::store(
        &record_key(&record.issuer, &record.resource),
        &Secret::new(json),
    )
    .map_err(store_err)?;
    bind(server, &record.issuer, &record.resource)
}

/// Binds `server` to an issuer and a resource.
pub(super) fn bind(server: &str, issuer: &str, resource: &str) -> Result<(), AuthError> {
    let b = serde_json::to_string(&Binding {
        issuer: issuer.to_owned(),
        resource: resource.to_owned(),
    })
    .map_err(|e| AuthError::Store(e.to_string()))?;
    credentials::store(&url_key(server), &Secret::new(b)).map_err(store_err)
}

/// What `server` is bound to.
pub(super) fn binding(server: &str) -> Result<Option<Binding>, AuthError> {
    let Some(raw) = credentials::load(&url_key(server)).map_err(store_err)? else {
        return Ok(None);
    };
    Ok(serde_json::from_str(raw.expose()).ok())
}

/// Removes the record for `issuer` and `resource`.
pub(super) fn delete(issuer: &str, resource: &str) -> Result<bool, AuthError> {
    credentials::delete(&record_key(issuer, resource)).map_err(store_err)
}

/// Removes `server`'s binding and the record it names: what `logout URL` does.
pub(super) fn forget(server: &str) -> Result<Option<Binding>, AuthError> {
    let Some(b) = binding(server)? else {
        return Ok(None);
    };
    delete(&b.issuer, &b.resource)?;
    credentials::delete(&url_key(server)).map_err(store_err)?;
    Ok(Some(b))
}

/// Held while this process signs in or refreshes for one issuer and resource; released on drop
/// (closing the file releases the `flock`).
#[derive(Debug)]
pub(super) struct SignInLock {
    _file: File,
}

/// The user's folder for lock files: `$XDG_RUNTIME_DIR/mcp-bridge`, else the cache folder.
fn lock_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("mcp-bridge");
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("mcp-bridge");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(h).join(".cache").join("mcp-bridge");
    }
    std::env::temp_dir().join("mcp-bridge")
}

/// Takes the lock for `issuer` and `resource`, waiting at most `timeout` for another process
/// to finish (it says so on stderr once).
pub(super) async fn lock(
    issuer: &str,
    resource: &str,
    timeout: Duration,
) -> Result<SignInLock, AuthError> {
    let dir = lock_dir();
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(&dir)
        .map_err(|e| AuthError::Io(format!("cannot create {}: {e}", dir.display())))?;
    let name = hex::encode(&Sha256::digest(record_key(issuer, resource).as_bytes())[..16]);
    let path = dir.join(format!("signin-{name}.lock"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| AuthError::Io(format!("cannot open the lock file {}: {e}", path.display())))?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut said = false;
    loop {
        match file.try_lock_exclusive() {
            Ok(true) => return Ok(SignInLock { _file: file }),
            Ok(false) => {}
            Err(e) => {
                return Err(AuthError::Io(format!(
                    "cannot lock {}: {e}",
                    path.display()
                )))
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(AuthError::LockTimeout(issuer.to_owned()));
        }
        if !said {
            eprintln!(
                "bridge-client: another bridge-client is signing in to {issuer}; waiting for it"
            );
            said = true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
