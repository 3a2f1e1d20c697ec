//! A fault-injecting TCP proxy on loopback, between bridge-client and the relay.
//!
//! It forwards bytes both ways and, on command: cuts every connection abruptly, refuses new
//! connections (closes them at once), or freezes existing connections (swallows their bytes
//! without closing, like a dead NAT entry). Plain threads, bounded by the test's lifetime.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use anyhow::Result;

struct Pair {
    a: TcpStream,
    b: TcpStream,
    frozen: Arc<AtomicBool>,
}

#[derive(Default)]
struct State {
    conns: Mutex<Vec<Pair>>,
    refusing: AtomicBool,
    stop: AtomicBool,
    cuts: AtomicU64,
    accepted: AtomicU64,
}

/// The proxy; stops and cuts everything on drop.
pub struct FaultProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    state: Arc<State>,
    acceptor: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub fn start(upstream: SocketAddr) -> Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let st = state.clone();
        let acceptor = thread::spawn(move || {
            for conn in listener.incoming() {
                if st.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = conn else { continue };
                if st.refusing.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(upstream) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                st.accepted.fetch_add(1, Ordering::SeqCst);
                let frozen = Arc::new(AtomicBool::new(false));
                if let (Ok(c1), Ok(c2), Ok(s1), Ok(s2)) = (
                    client.try_clone(),
                    client.try_clone(),
                    server.try_clone(),
                    server.try_clone(),
                ) {
                    pump(c1, s1, frozen.clone());
                    pump(s2, c2, frozen.clone());
                    st.conns
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(Pair {
                            a: client,
                            b: server,
                            frozen,
                        });
                }
            }
        });
        Ok(FaultProxy {
            addr,
            state,
            acceptor: Some(acceptor),
        })
    }

    /// `ws://PROXY/mcp/TOOL`.
    pub fn url(&self, tool: &str) -> String {
        format!("ws://{}/mcp/{tool}", self.addr)
    }

    /// Cuts every open connection at once (both directions, no WebSocket close).
    pub fn cut_all(&self) -> usize {
        let pairs: Vec<Pair> =
            std::mem::take(&mut *self.state.conns.lock().unwrap_or_else(|e| e.into_inner()));
        for p in &pairs {
            let _ = p.a.shutdown(Shutdown::Both);
            let _ = p.b.shutdown(Shutdown::Both);
        }
        self.state
            .cuts
            .fetch_add(pairs.len() as u64, Ordering::SeqCst);
        pairs.len()
    }

    /// While set, new connections are closed as soon as they are accepted.
    pub fn set_refusing(&self, on: bool) {
        self.state.refusing.store(on, Ordering::SeqCst);
    }

    /// Existing connections stop forwarding (bytes are swallowed) but stay open. New
    /// connections are not affected.
    pub fn freeze_existing(&self) {
        for p in self
            .state
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            p.frozen.store(true, Ordering::SeqCst);
        }
    }

    /// Connections cut so far.
    pub fn cuts(&self) -> u64 {
        self.state.cuts.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// Cuts all connections at pseudo-random intervals averaging `mean`, until `stop` is set.
    pub fn random_cuts(self: &Arc<Self>, mean: Duration, stop: Arc<AtomicBool>) -> JoinHandle<()> {
        let me = self.clone();
        thread::spawn(move || {
            let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ u64::from(std::process::id());
            while !stop.load(Ordering::SeqCst) {
                // xorshift64: a spread of 0.2×–1.8× the mean.
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let factor = 0.2 + 1.6 * ((x % 1000) as f64 / 1000.0);
                thread::sleep(mean.mul_f64(factor));
                if !stop.load(Ordering::SeqCst) {
                    me.cut_all();
                }
            }
        })
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        // Wake the acceptor.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
        self.cut_all();
    }
}

/// Copies `from` → `to` until either side closes; swallows bytes while `frozen`.
fn pump(mut from: TcpStream, mut to: TcpStream, frozen: Arc<AtomicBool>) {
    thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if frozen.load(Ordering::SeqCst) {
                continue;
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

/// An HTTP CONNECT proxy on loopback (what corporate networks put in front of the internet),
/// optionally requiring `Proxy-Authorization: Basic`. It tunnels only to loopback targets.
pub struct ConnectProxy {
    /// Where clients reach the proxy.
    pub addr: SocketAddr,
    tunnels: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl ConnectProxy {
    /// Starts the proxy; with `credentials` (`user:password`), clients must present them.
    pub fn start(credentials: Option<&str>) -> Result<ConnectProxy> {
        use base64::Engine;
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let tunnels = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let expected = credentials.map(|c| base64::engine::general_purpose::STANDARD.encode(c));
        let (t, st) = (tunnels.clone(), stop.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = conn else { continue };
                let (t, expected) = (t.clone(), expected.clone());
                thread::spawn(move || {
                    let _ = tunnel(client, expected.as_deref(), &t);
                });
            }
        });
        Ok(ConnectProxy {
            addr,
            tunnels,
            stop,
        })
    }

    /// Tunnels opened so far.
    pub fn tunnels(&self) -> u64 {
        self.tunnels.load(Ordering::SeqCst)
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn tunnel(
    mut client: TcpStream,
    expected: Option<&str>,
    tunnels: &AtomicU64,
) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
        if client.read(&mut byte)? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    client.set_read_timeout(None)?;
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.lines();
    let target = lines
        .next()
        .and_then(|l| l.strip_prefix("CONNECT "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or("")
        .to_owned();
    // `Proxy-Authorization: Basic <b64>`: the scheme is case-insensitive, the credentials not.
    let given = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("proxy-authorization"))
        .and_then(|(_, v)| {
            let (scheme, creds) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("basic")
                .then(|| creds.trim().to_owned())
        });
    if let Some(expected) = expected {
        if given.as_deref() != Some(expected) {
            client.write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\n\r\n")?;
            return Ok(());
        }
    }
    let loopback = target.starts_with("127.0.0.1:")
        || target.starts_with("localhost:")
        || target.starts_with("[::1]:");
    if !loopback {
        client.write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")?;
        return Ok(());
    }
    let server = match TcpStream::connect(&target) {
        Ok(s) => s,
        Err(_) => {
            client.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")?;
            return Ok(());
        }
    };
    client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
    tunnels.fetch_add(1, Ordering::SeqCst);
    let frozen = Arc::new(AtomicBool::new(false));
    pump(client.try_clone()?, server.try_clone()?, frozen.clone());
    pump(server, client, frozen);
    Ok(())
}
