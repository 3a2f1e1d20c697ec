//! Relay tokens in the OS keyring, keyed by the relay's origin (`wss://host:port`, made by
//! [`crate::relay_url::origin`], the one rule for login, logout and connecting).
//!
//! Uses the `keyring` crate: the platform's native store on macOS and Windows; on Linux, the
//! kernel's keyutils facility in the **user** keyring, which works headless (CI, servers,
//! containers) and is shared by every process of the user — unlike a per-login session keyring,
//! which a process started without a login session does not have. Tokens never reach logs.

use crate::Secret;

/// The keyring "service" under which tokens are stored.
const SERVICE: &str = "mcp-bridge";

/// Why the keyring could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// The store refused or failed.
    #[error("the OS keyring ({store}) failed: {reason}")]
    Store {
        /// Which store.
        store: &'static str,
        /// What it said (never the secret).
        reason: String,
    },
}

/// A human name for the store in use, for messages ("stored in …").
pub fn store_name() -> &'static str {
    if cfg!(target_os = "linux") {
        "Linux kernel keyring (keyutils, user keyring)"
    } else if cfg!(target_os = "macos") {
        "macOS Keychain"
    } else if cfg!(target_os = "windows") {
        "Windows Credential Manager"
    } else {
        "platform keyring"
    }
}

fn entry(origin: &str) -> Result<keyring::Entry, CredentialError> {
    install_store();
    keyring::Entry::new(SERVICE, origin).map_err(store_err)
}

fn store_err(e: keyring::Error) -> CredentialError {
    CredentialError::Store {
        store: store_name(),
        reason: match e {
            keyring::Error::NoStorageAccess(inner) => format!("no access: {inner}"),
            keyring::Error::PlatformFailure(inner) => inner.to_string(),
            other => other.to_string(),
        },
    }
}

/// Stores `token` for `origin`, replacing any earlier one.
pub fn store(origin: &str, token: &Secret) -> Result<(), CredentialError> {
    entry(origin)?
        .set_password(token.expose())
        .map_err(store_err)
}

/// The token stored for `origin`, if any.
pub fn load(origin: &str) -> Result<Option<Secret>, CredentialError> {
    match entry(origin)?.get_password() {
        Ok(t) => Ok(Some(Secret::new(t))),
        Err(keyring::Error::NoEntry) => Ok(None),
        Err(e) => Err(store_err(e)),
    }
}

/// Removes the token for `origin`; false when there was none.
pub fn delete(origin: &str) -> Result<bool, CredentialError> {
    match entry(origin)?.delete_credential() {
        Ok(()) => Ok(true),
        Err(keyring::Error::NoEntry) => Ok(false),
        Err(e) => Err(store_err(e)),
    }
}

#[cfg(target_os = "linux")]
fn install_store() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| keyring::set_default_credential_builder(Box::new(user_keyring::Builder)));
}

#[cfg(not(target_os = "linux"))]
fn install_store() {}

/// A keyring credential store over the Linux user keyring (`@u`).
#[cfg(target_os = "linux")]
mod user_keyring {
    use std::any::Any;

    use keyring::credential::{
        Credential, CredentialApi, CredentialBuilderApi, CredentialPersistence,
    };
    use keyring::Error;
    use linux_keyutils::{KeyError, KeyRing, KeyRingIdentifier};

    pub(super) struct Builder;

    impl CredentialBuilderApi for Builder {
        fn build(
            &self,
            target: Option<&str>,
            service: &str,
            user: &str,
        ) -> keyring::Result<Box<Credential>> {
            let description = match target {
                Some(t) => t.to_owned(),
                None => format!("{service}:{user}"),
            };
            Ok(Box::new(UserKey { description }))
        }

        fn as_any(&self) -> &dyn Any {
            self
        }

        fn persistence(&self) -> CredentialPersistence {
            CredentialPersistence::UntilReboot
        }
    }

    #[derive(Debug)]
    struct UserKey {
        description: String,
    }

    fn ring() -> keyring::Result<KeyRing> {
        KeyRing::from_special_id(KeyRingIdentifier::User, true).map_err(platform)
    }

    impl UserKey {
        /// The key, if there is a live one. A key just removed (here or by another process)
        /// can still be found, revoked or expired, until the kernel reaps it: that is none.
        fn find(&self) -> keyring::Result<Option<(KeyRing, linux_keyutils::Key)>> {
            let ring = ring()?;
            match ring.search(&self.description) {
                Ok(k) => Ok(Some((ring, k))),
                Err(KeyError::KeyDoesNotExist | KeyError::KeyRevoked | KeyError::KeyExpired) => {
                    Ok(None)
                }
                Err(e) => Err(platform(e)),
            }
        }
    }

    /// A key removed between finding and using it is no entry; anything else a failure.
    fn gone_or_platform(e: KeyError) -> Error {
        match e {
            KeyError::KeyDoesNotExist | KeyError::KeyRevoked | KeyError::KeyExpired => {
                Error::NoEntry
            }
            e => platform(e),
        }
    }

    fn platform(e: KeyError) -> Error {
        Error::PlatformFailure(Box::new(std::io::Error::other(format!("keyutils: {e:?}"))))
    }

    impl CredentialApi for UserKey {
        fn set_secret(&self, secret: &[u8]) -> keyring::Result<()> {
            ring()?
                .add_key(&self.description, secret)
                .map(|_| ())
                .map_err(platform)
        }

        fn get_secret(&self) -> keyring::Result<Vec<u8>> {
            let Some((_, key)) = self.find()? else {
                return Err(Error::NoEntry);
            };
            key.read_to_vec().map_err(gone_or_platform)
        }

        fn delete_credential(&self) -> keyring::Result<()> {
            let Some((ring, key)) = self.find()? else {
                return Err(Error::NoEntry);
            };
            // Unlink first, so the key is gone from the keyring at once; invalidating alone
            // leaves it findable (as revoked) until the kernel's garbage collector runs.
            ring.unlink_key(key).map_err(gone_or_platform)?;
            let _ = key.invalidate();
            Ok(())
        }

        fn as_any(&self) -> &dyn Any {
            self
        }
    }
}
