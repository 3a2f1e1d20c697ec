//! The sections about the relay's own network face: `listen`, `node_id`, `[cluster]`, `[tls]`,
//! `[security]`, `[metrics]`, and the rule that ties `listen` to `[auth]`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::auth::AuthConfig;

use super::diag::Problems;
use super::read::Section;
use super::{Cluster, TlsFiles, DEFAULT_LISTEN};

/// `listen = "IP:PORT"`; the default when absent, `None` when invalid.
pub(super) fn listen(root: &Section<'_, '_>, p: &mut Problems<'_>) -> Option<SocketAddr> {
    if !root.has("listen") {
        return DEFAULT_LISTEN.parse().ok();
    }
    let (text, at) = root.string("listen", p)?;
    match text.parse() {
        Ok(addr) => Some(addr),
        Err(_) => {
            p.error(
                at,
                "listen",
                format!("`{text}` is not an address: write IP:PORT, e.g. \"127.0.0.1:8787\""),
            );
            None
        }
    }
}

/// `[tls]`: the files are loaded, so a missing or unreadable one is reported here, at its key.
pub(super) fn tls(root: &Section<'_, '_>, base: &Path, p: &mut Problems<'_>) -> Option<TlsFiles> {
    let t = root.table("tls", p)?;
    t.only(&["cert", "key", "client_ca"], p);
    let file = |field: &str, p: &mut Problems<'_>| {
        t.string(field, p)
            .map(|(text, _)| resolve(base, Path::new(text)))
    };
    let cert = file("cert", p);
    let key = file("key", p);
    let client_ca = file("client_ca", p);
    if !t.has("cert") {
        t.missing("cert", "the PEM certificate chain", p);
    }
    if !t.has("key") {
        t.missing("key", "the PEM private key", p);
    }
    let mut loaded = true;
    if let Some(cert) = &cert {
        if let Err(e) = shared::tls::load_certs(cert) {
            p.error(t.span("cert"), &t.key("cert"), e.to_string());
            loaded = false;
        }
    }
    if let Some(key) = &key {
        if let Err(e) = shared::tls::load_key(key) {
            p.error(t.span("key"), &t.key("key"), e.to_string());
            loaded = false;
        }
    }
    if let Some(ca) = &client_ca {
        if let Err(e) = shared::tls::load_certs(ca) {
            p.error(t.span("client_ca"), &t.key("client_ca"), e.to_string());
            loaded = false;
        }
    }
    let (cert, key) = (cert?, key?);
    if loaded {
        // Each file reads; what is left is whether they fit together.
        if let Err(e) = shared::tls::server_config(&cert, &key, client_ca.as_deref()) {
            p.error(t.span("key"), &t.key("key"), e.to_string());
        }
    }
    Some(TlsFiles {
        cert,
        key,
        client_ca,
    })
}

/// Relative paths in the config are taken from the config file's folder.
pub(super) fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_owned()
    } else {
        base.join(p)
    }
}

/// Without authentication, the relay may listen on loopback only.
pub(super) fn auth_off_loopback(
    root: &Section<'_, '_>,
    listen: SocketAddr,
    auth: &AuthConfig,
    p: &mut Problems<'_>,
) {
    if !matches!(auth, AuthConfig::None) || listen.ip().is_loopback() {
        return;
    }
    let fix = "configure [auth] with mode = \"tokens\" or \"jwt\", or listen on 127.0.0.1";
    // Report it where the file says "no authentication", else where it says where to listen.
    let explicit = root.child("auth").filter(|a| a.has("mode"));
    match explicit {
        Some(a) => p.error(
            a.span("mode"),
            &a.key("mode"),
            format!(
                "\"none\" is allowed only on a loopback address, and `listen` is {listen}: {fix}"
            ),
        ),
        None => p.error(
            root.span("listen"),
            "listen",
            format!(
                "{listen} is not a loopback address, and without [auth] (auth.mode \"none\") \
                 the relay may listen on loopback only: {fix}"
            ),
        ),
    }
}

/// `[security] allowed_origins = [...]`.
pub(super) fn security(root: &Section<'_, '_>, p: &mut Problems<'_>) -> Vec<String> {
    let Some(s) = root.table("security", p) else {
        return Vec::new();
    };
    s.only(&["allowed_origins"], p);
    s.strings("allowed_origins", p).unwrap_or_default()
}

/// `node_id = "NAME"`: letters, digits, `-` and `_`, at most 63 (a DNS label, so a pod or
/// host name fits; it starts every session id, before a dot, and a load balancer's pattern
/// matches it).
pub(super) fn node_id(root: &Section<'_, '_>, p: &mut Problems<'_>) -> Option<String> {
    let (text, at) = root.string("node_id", p)?;
    match check_node_id(text) {
        Ok(()) => Some(text.to_owned()),
        Err(why) => {
            p.error(at, &root.key("node_id"), why);
            None
        }
    }
}

/// Whether `name` can be a node id; else what is wrong with it, in words for the user.
pub fn check_node_id(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` cannot be a node id: use 1 to 63 letters, digits, `-` or `_` (it starts \
             every session id, and the load balancer matches it)"
        ))
    }
}

/// `[metrics] listen = "IP:PORT"`.
pub(super) fn metrics(root: &Section<'_, '_>, p: &mut Problems<'_>) -> Option<SocketAddr> {
    let m = root.table("metrics", p)?;
    m.only(&["listen"], p);
    let (text, at) = m.string("listen", p)?;
    match text.parse() {
        Ok(addr) => Some(addr),
        Err(_) => {
            p.error(
                at,
                &m.key("listen"),
                format!("`{text}` is not an address: write IP:PORT, e.g. \"127.0.0.1:9090\""),
            );
            None
        }
    }
}

/// `[cluster]`: where the other relay nodes are, for Streamable HTTP requests that reach this
/// node for a session of another (`peers = { NODE = "HOST:PORT" }`, and/or
/// `peer_address = "{node}.SUFFIX:PORT"` for any node not listed).
pub(super) fn cluster(root: &Section<'_, '_>, p: &mut Problems<'_>) -> Cluster {
    let Some(c) = root.table("cluster", p) else {
        return Cluster::default();
    };
    c.only(&["peers", "peer_address"], p);
    let mut peers = c.string_map("peers", p).unwrap_or_default();
    let at = c.span("peers");
    peers.retain(|node, addr| {
        let key = format!("{}.{node}", c.key("peers"));
        if let Err(why) = check_node_id(node) {
            p.error(at.clone(), &key, why);
            return false;
        }
        if let Err(why) = check_address(addr) {
            p.error(at.clone(), &key, why);
            return false;
        }
        true
    });
    let peer_address = c.string("peer_address", p).and_then(|(text, at)| {
        let why = if !text.contains("{node}") {
            Some("it must contain `{node}`, where the node id of the session goes".to_owned())
        } else {
            // Checked with a stand-in node id; the error shows the template as written.
            check_address(&text.replace("{node}", "node"))
                .err()
                .map(|_| not_host_port(text))
        };
        match why {
            Some(why) => {
                p.error(at, &c.key("peer_address"), why);
                None
            }
            None => Some(text.to_owned()),
        }
    });
    Cluster {
        peers,
        peer_address,
    }
}

/// `HOST:PORT` with a port number (a name is resolved when a request is passed on).
fn check_address(addr: &str) -> Result<(), String> {
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(())
        }
        _ => Err(not_host_port(addr)),
    }
}

fn not_host_port(addr: &str) -> String {
    format!("`{addr}` is not HOST:PORT (e.g. \"10.0.0.11:8787\" or \"{{node}}.relays.svc:8787\")")
}
