//! Relay URLs: which ones bridge-client connects to, and the one rule — used by `login`,
//! `logout` and every connection — that turns a URL into the key its token is stored under.
//!
//! The key is the URL's origin, `scheme://host:port`, where `ws://` and `http://` are one
//! scheme (`ws`) and `wss://` and `https://` another (`wss`): the same server, whichever
//! protocol bridge-client speaks to it, has the same token. The host is lower-cased, the port
//! defaults to 80 (`ws`) or 443 (`wss`), and the path is ignored, so one login serves every tool
//! of a relay. A plain and a TLS URL never share a key, nor do two spellings of one host
//! (`localhost` and `127.0.0.1`).

/// Why a URL cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// Not a URL at all.
    #[error("`{url}` is not a URL ({reason}): give the relay's URL, e.g. wss://relay.example.com/mcp/TOOL")]
    Invalid {
        /// What was given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A host (and port) without `ws://` or `wss://`.
    #[error("`{url}` has no scheme: give wss://{url} (TLS) or ws://{url} (plain)")]
    NoScheme {
        /// What was given.
        url: String,
    },
    /// A scheme bridge-client does not speak.
    #[error("`{url}`: unsupported scheme `{scheme}`: give a ws:// or wss:// URL")]
    Scheme {
        /// What was given.
        url: String,
        /// Its scheme.
        scheme: String,
    },
    /// No host in the URL.
    #[error("`{url}` has no host: give the relay's URL, e.g. wss://relay.example.com/mcp/TOOL")]
    NoHost {
        /// What was given.
        url: String,
    },
    /// A plain `http://` URL to a host that is not this machine.
    #[error(
        "`{url}` is plain http:// to another machine: tokens and messages could be read on the \
         way: give {suggestion}, or pass --allow-insecure-http if that network is trusted"
    )]
    InsecureHttp {
        /// What was given.
        url: String,
        /// The same URL with `https://`.
        suggestion: String,
    },
}

/// What bridge-client speaks to a URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    /// `ws://` or `wss://`: the `mcp-bridge.v1` WebSocket tunnel to a relay.
    Tunnel,
    /// `http://` or `https://`: MCP Streamable HTTP (or HTTP+SSE) to any MCP server.
    Http,
}

/// What a URL's scheme says to speak: `ws(s)://` the tunnel, `http(s)://` Streamable HTTP.
/// Plain `http://` is refused for a host other than this machine unless `allow_insecure_http`.
pub fn upstream(url: &str, allow_insecure_http: bool) -> Result<Upstream, UrlError> {
    let (kind, websocket, host, _) = parts(url)?;
    if websocket {
        return Ok(Upstream::Tunnel);
    }
    if kind == Kind::Plain && !allow_insecure_http && !is_loopback(&host) {
        let trimmed = url.trim();
        let rest = trimmed.split_once("://").map_or(trimmed, |(_, rest)| rest);
        return Err(UrlError::InsecureHttp {
            url: url.to_owned(),
            suggestion: format!("https://{rest}"),
        });
    }
    Ok(Upstream::Http)
}

/// The http(s) URL of the same resource as a WebSocket URL (`ws://` → `http://`, `wss://` →
/// `https://`): what OAuth sign-in binds tokens to. Other URLs come back unchanged.
pub fn as_http(url: &str) -> String {
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("wss://") {
        format!("https://{}", &url[6..])
    } else if lower.starts_with("ws://") {
        format!("http://{}", &url[5..])
    } else {
        url.to_owned()
    }
}

/// Whether `host` names this machine (`localhost`, 127.0.0.0/8, `::1`).
pub fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether a URL's scheme is plain or TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    Tls,
}

/// Scheme, host and port of a URL with one of the four schemes.
fn parts(url: &str) -> Result<(Kind, bool, String, u16), UrlError> {
    let invalid = |reason: String| UrlError::Invalid {
        url: url.to_owned(),
        reason,
    };
    let uri: http::Uri = url
        .trim()
        .parse()
        .map_err(|e: http::uri::InvalidUri| invalid(e.to_string()))?;
    let Some(scheme) = uri.scheme_str().map(str::to_ascii_lowercase) else {
        return Err(UrlError::NoScheme {
            url: url.trim().trim_end_matches('/').to_owned(),
        });
    };
    let (kind, websocket) = match scheme.as_str() {
        "ws" => (Kind::Plain, true),
        "wss" => (Kind::Tls, true),
        "http" => (Kind::Plain, false),
        "https" => (Kind::Tls, false),
        _ => {
            return Err(UrlError::Scheme {
                url: url.to_owned(),
                scheme,
            })
        }
    };
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| UrlError::NoHost {
            url: url.to_owned(),
        })?
        .to_ascii_lowercase();
    let port = uri.port_u16().unwrap_or(match kind {
        Kind::Plain => 80,
        Kind::Tls => 443,
    });
    Ok((kind, websocket, host, port))
}

/// The key a relay's token is stored under: `ws://host:port` or `wss://host:port` (see the
/// module's documentation). Accepts `ws`, `wss`, `http` and `https` URLs.
pub fn origin(url: &str) -> Result<String, UrlError> {
    let (kind, _, host, port) = parts(url)?;
    let scheme = match kind {
        Kind::Plain => "ws",
        Kind::Tls => "wss",
    };
    Ok(format!("{scheme}://{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_urls_name_their_http_resource() {
        assert_eq!(
            as_http("ws://127.0.0.1:9/mcp/t"),
            "http://127.0.0.1:9/mcp/t"
        );
        assert_eq!(as_http("WSS://relay/mcp/t"), "https://relay/mcp/t");
        assert_eq!(as_http("https://relay/mcp/t"), "https://relay/mcp/t");
    }

    #[test]
    fn one_origin_for_ws_and_http_and_one_for_wss_and_https() {
        for (url, key) in [
            ("ws://127.0.0.1:8787/mcp/demo", "ws://127.0.0.1:8787"),
            ("http://127.0.0.1:8787", "ws://127.0.0.1:8787"),
            ("HTTP://127.0.0.1:8787/", "ws://127.0.0.1:8787"),
            (
                "wss://Relay.Example.com/mcp/github",
                "wss://relay.example.com:443",
            ),
            ("https://relay.example.com", "wss://relay.example.com:443"),
            (
                "https://relay.example.com:443/x",
                "wss://relay.example.com:443",
            ),
            ("ws://relay.example.com", "ws://relay.example.com:80"),
            ("wss://relay.example.com:80", "wss://relay.example.com:80"),
            ("ws://[::1]:9/mcp/a", "ws://[::1]:9"),
        ] {
            assert_eq!(origin(url).as_deref(), Ok(key), "{url}");
        }
    }

    #[test]
    fn what_is_not_a_relay_url_says_what_to_give() {
        assert_eq!(
            origin("relay.example.com"),
            Err(UrlError::NoScheme {
                url: "relay.example.com".into()
            })
        );
        assert!(origin("127.0.0.1:8787")
            .unwrap_err()
            .to_string()
            .contains("ws://127.0.0.1:8787"));
        assert!(matches!(
            origin("ftp://relay.example.com"),
            Err(UrlError::Scheme { .. })
        ));
        assert!(matches!(origin("not a url"), Err(UrlError::Invalid { .. })));
    }

    #[test]
    fn the_scheme_decides_the_upstream() {
        assert_eq!(
            upstream("wss://relay.example.com/mcp/a", false),
            Ok(Upstream::Tunnel)
        );
        assert_eq!(
            upstream("ws://127.0.0.1:1/mcp/a", false),
            Ok(Upstream::Tunnel)
        );
        assert_eq!(
            upstream("https://mcp.example.com/mcp", false),
            Ok(Upstream::Http)
        );
        assert_eq!(
            upstream("http://127.0.0.1:8792/mcp", false),
            Ok(Upstream::Http)
        );
        assert_eq!(upstream("http://localhost/mcp", false), Ok(Upstream::Http));
        assert_eq!(upstream("http://[::1]:9/mcp", false), Ok(Upstream::Http));
        let e = upstream("http://mcp.example.com/mcp", false).unwrap_err();
        assert!(
            e.to_string().contains("give https://mcp.example.com/mcp"),
            "{e}"
        );
        assert!(e.to_string().contains("--allow-insecure-http"), "{e}");
        assert_eq!(
            upstream("http://mcp.example.com/mcp", true),
            Ok(Upstream::Http)
        );
    }
}
