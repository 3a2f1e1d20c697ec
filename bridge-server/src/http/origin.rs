//! Which `Origin` a request may carry: one in `[security] allowed_origins`, or the relay's own
//! origin when it is reached by a loopback name. Not the refusal itself (`admit` in the parent).
//!
//! A page can only have the relay's own origin if the relay served it, and the relay serves no
//! pages; so a request from its own origin is the relay's, not a cross-site one. That holds only
//! while the name cannot be pointed elsewhere: a DNS rebinding page also sends its "own" origin
//! (`http://evil.example:PORT` with `Host: evil.example:PORT`), so only the literal loopback
//! names (`localhost`, `127.0.0.0/8`, `[::1]`) count, never a name that DNS resolves.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Whether a request with this `Origin` value may go on.
pub(super) fn allowed(origin: &str, host: Option<&str>, allowed_origins: &[String]) -> bool {
    allowed_origins.iter().any(|a| a == origin) || is_own_loopback_origin(origin, host)
}

/// Whether `origin` is `http://HOST` or `https://HOST` for the request's own `Host`, and that
/// host is a loopback name.
fn is_own_loopback_origin(origin: &str, host: Option<&str>) -> bool {
    let Some(host) = host else { return false };
    let Some(authority) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    authority.eq_ignore_ascii_case(host) && is_loopback_name(host)
}

/// Whether `host` (`NAME[:PORT]`) names this machine's loopback interface literally.
fn is_loopback_name(host: &str) -> bool {
    let (name_ok, port) = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((v6, port)) => (v6.parse::<Ipv6Addr>().is_ok_and(|a| a.is_loopback()), port),
            None => return false,
        },
        None => {
            let (name, port) = host.find(':').map_or((host, ""), |i| host.split_at(i));
            let ok = name.eq_ignore_ascii_case("localhost")
                || name.parse::<Ipv4Addr>().is_ok_and(|a| a.is_loopback());
            (ok, port)
        }
    };
    let port_ok = port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    name_ok && port_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relays_own_loopback_origin_is_allowed() {
        for (origin, host) in [
            ("http://127.0.0.1:8080", "127.0.0.1:8080"),
            ("http://localhost:8080", "localhost:8080"),
            ("http://LOCALHOST:8080", "localhost:8080"),
            ("https://[::1]:8443", "[::1]:8443"),
            ("http://127.0.0.2", "127.0.0.2"),
        ] {
            assert!(allowed(origin, Some(host), &[]), "{origin} at {host}");
        }
    }

    #[test]
    fn another_origin_or_a_resolvable_name_is_not() {
        for (origin, host) in [
            // DNS rebinding: the page's own origin, under a name that resolves to loopback.
            ("http://evil.example:8080", "evil.example:8080"),
            ("http://evil.example.com", "evil.example.com"),
            // Another local port is another site.
            ("http://127.0.0.1:3000", "127.0.0.1:8080"),
            ("http://localhost:8080", "127.0.0.1:8080"),
            // A public address, or a name that only looks local.
            ("http://10.0.0.1:8080", "10.0.0.1:8080"),
            (
                "http://localhost.evil.example:8080",
                "localhost.evil.example:8080",
            ),
            ("http://127.0.0.1:80x", "127.0.0.1:80x"),
            ("http://[::2]:8080", "[::2]:8080"),
            ("null", "127.0.0.1:8080"),
            ("ws://127.0.0.1:8080", "127.0.0.1:8080"),
        ] {
            assert!(!allowed(origin, Some(host), &[]), "{origin} at {host}");
        }
        assert!(!allowed("http://127.0.0.1:8080", None, &[]), "no Host");
    }

    #[test]
    fn the_allow_list_still_decides_for_everything_else() {
        let list = vec!["https://ide.example".to_owned()];
        assert!(allowed("https://ide.example", Some("relay.example"), &list));
        assert!(!allowed(
            "https://ide.example:1",
            Some("relay.example"),
            &list
        ));
    }
}
