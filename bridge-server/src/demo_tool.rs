//! The built-in demo tool: a small MCP stdio server (`bridge-server demo-tool`) that the default
//! relay hosts, so a fresh machine has something real to talk to.
//!
//! It speaks the handshake era of MCP (`initialize`, `ping`; `server/discover` is answered with
//! "method not found", which makes 2026-era clients fall back) and offers five tools: `echo`,
//! `add`, `slow` (progress notifications, cancellable), `sample` (asks the client to sample) and
//! `crash` (exits at once, to exercise failure handling).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::sync::CancellationToken;

use shared::framing::{write_line, Frame, LineReader};
use shared::jsonrpc::{self, Id};
use shared::DEFAULT_MAX_MESSAGE_SIZE;

/// Protocol versions the demo tool speaks, newest first.
const VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

/// Requests handled at once; reading stdin pauses while this many are running.
const MAX_CONCURRENT: usize = 64;

/// How long `sample` waits for the client's answer.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(60);

type Replies = Arc<Mutex<HashMap<Id, oneshot::Sender<Result<Value, Value>>>>>;
type InFlight = Arc<Mutex<HashMap<Id, CancellationToken>>>;

/// Serves MCP on the given streams until input ends (normally the process's stdin and stdout).
pub async fn serve<R, W>(input: R, output: W) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(64);
    let writer = tokio::spawn(async move {
        let mut out = BufWriter::new(output);
        while let Some(msg) = out_rx.recv().await {
            write_line(&mut out, &msg).await?;
            if out_rx.is_empty() {
                out.flush().await?;
            }
        }
        out.flush().await
    });
    let server = Server {
        out: out_tx,
        replies: Replies::default(),
        in_flight: InFlight::default(),
        next_id: Arc::new(AtomicU64::new(0)),
    };
    let permits = Arc::new(Semaphore::new(MAX_CONCURRENT));
    let mut reader = LineReader::new(input, DEFAULT_MAX_MESSAGE_SIZE);
    while let Some(frame) = reader.next_frame().await? {
        let line = match frame {
            Frame::Line(line) => line,
            Frame::Oversize { head, .. } => {
                let id = jsonrpc::scan_head(&head).id;
                server
                    .send(jsonrpc::error_response(
                        id.as_ref(),
                        jsonrpc::INVALID_REQUEST,
                        "message too large",
                        None,
                    ))
                    .await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let server = server.clone();
        tokio::spawn(async move {
            server.on_message(line).await;
            drop(permit);
        });
    }
    // Input is over: nobody will answer our requests or read slow results any more.
    server.lock_replies().clear();
    for (_, token) in server.lock_in_flight().drain() {
        token.cancel();
    }
    drop(server);
    // Let running requests finish (bounded by their own timeouts), then close the output.
    let _ = permits.acquire_many(MAX_CONCURRENT as u32).await;
    match writer.await {
        Ok(result) => result,
        Err(e) => Err(std::io::Error::other(e)),
    }
}

#[derive(Clone)]
struct Server {
    out: mpsc::Sender<Vec<u8>>,
    /// Our requests to the client, waiting for its answer.
    replies: Replies,
    /// The client's requests being worked on, so `notifications/cancelled` can stop them.
    in_flight: InFlight,
    next_id: Arc<AtomicU64>,
}

impl Server {
    async fn send(&self, msg: Vec<u8>) {
        let _ = self.out.send(msg).await;
    }

    async fn on_message(&self, line: Bytes) {
        let msg: Value = match serde_json::from_slice(&line) {
            Ok(v) => v,
            Err(e) => {
                let body =
                    jsonrpc::error_response(None, jsonrpc::PARSE_ERROR, &e.to_string(), None);
                self.send(body).await;
                return;
            }
        };
        let id = msg
            .get("id")
            .and_then(|v| serde_json::value::to_raw_value(v).ok())
            .and_then(|raw| Id::from_raw(&raw));
        let method = msg.get("method").and_then(Value::as_str);
        match (method, id) {
            (Some(method), Some(id)) => self.on_request(method, id, &msg).await,
            (Some(method), None) => self.on_notification(method, &msg),
            (None, Some(id)) => {
                let waiter = self.lock_replies().remove(&id);
                if let Some(waiter) = waiter {
                    let outcome = match msg.get("error") {
                        Some(err) => Err(err.clone()),
                        None => Ok(msg.get("result").cloned().unwrap_or(Value::Null)),
                    };
                    let _ = waiter.send(outcome);
                }
            }
            (None, None) => {}
        }
    }

    fn on_notification(&self, method: &str, msg: &Value) {
        if method == "notifications/cancelled" {
            let id = msg
                .pointer("/params/requestId")
                .and_then(|v| serde_json::value::to_raw_value(v).ok())
                .and_then(|raw| Id::from_raw(&raw));
            if let Some(token) = id.and_then(|id| self.lock_in_flight().remove(&id)) {
                token.cancel();
            }
        }
    }

    async fn on_request(&self, method: &str, id: Id, msg: &Value) {
        let params = msg.get("params").cloned().unwrap_or(Value::Null);
        let token = CancellationToken::new();
        self.lock_in_flight().insert(id.clone(), token.clone());
        let outcome = tokio::select! {
            r = self.dispatch(method, &params) => Some(r),
            () = token.cancelled() => None,
        };
        self.lock_in_flight().remove(&id);
        let Some(outcome) = outcome else {
            return; // cancelled: the spec says not to answer
        };
        let body = match outcome {
            Ok(result) => {
                let resp = json!({"jsonrpc": "2.0", "id": id.to_json(), "result": result});
                serde_json::to_vec(&resp).unwrap_or_default()
            }
            Err((code, message)) => jsonrpc::error_response(Some(&id), code, &message, None),
        };
        self.send(body).await;
    }

    async fn dispatch(&self, method: &str, params: &Value) -> Result<Value, (i64, String)> {
        match method {
            "initialize" => {
                let asked = params.get("protocolVersion").and_then(Value::as_str);
                let version = asked
                    .filter(|v| VERSIONS.contains(v))
                    .unwrap_or(VERSIONS[0]);
                Ok(json!({
                    "protocolVersion": version,
                    "capabilities": {"tools": {"listChanged": false}},
                    "serverInfo": {"name": "mcp-bridge-demo", "version": env!("CARGO_PKG_VERSION")},
                    "instructions": "A demo tool hosted by the mcp-bridge relay: echo, add, slow, sample."
                }))
            }
            "ping" => Ok(json!({})),
            "tools/list" => Ok(json!({"tools": tool_list()})),
            "tools/call" => self.call_tool(params).await,
            _ => Err((
                jsonrpc::METHOD_NOT_FOUND,
                format!("method not found: {method}"),
            )),
        }
    }

    async fn call_tool(&self, params: &Value) -> Result<Value, (i64, String)> {
        let name = params.get("name").and_then(Value::as_str).unwrap_or("");
        let args = params.get("arguments").cloned().unwrap_or(json!({}));
        let bad = |m: &str| (jsonrpc::INVALID_PARAMS, format!("{name}: {m}"));
        match name {
            "echo" => {
                let text = args
                    .get("text")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("`text` (a string) is required"))?;
                Ok(text_result(text, false))
            }
            "add" => {
                let num = |k: &str| args.get(k).and_then(Value::as_f64);
                let (Some(a), Some(b)) = (num("a"), num("b")) else {
                    return Err(bad("`a` and `b` (numbers) are required"));
                };
                let sum = a + b;
                let text = serde_json::Number::from_f64(sum)
                    .map(|n| {
                        if sum.fract() == 0.0 && sum.abs() < 9.0e15 {
                            format!("{}", sum as i64)
                        } else {
                            n.to_string()
                        }
                    })
                    .ok_or_else(|| bad("the sum is not a finite number"))?;
                Ok(text_result(&text, false))
            }
            "slow" => {
                let steps = args
                    .get("steps")
                    .and_then(Value::as_u64)
                    .unwrap_or(3)
                    .min(1_000_000);
                let delay = args
                    .get("delay_ms")
                    .and_then(Value::as_u64)
                    .unwrap_or(50)
                    .min(10_000);
                let token = params.pointer("/_meta/progressToken").cloned();
                for i in 1..=steps {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    if let Some(token) = &token {
                        let note = json!({
                            "jsonrpc": "2.0",
                            "method": "notifications/progress",
                            "params": {"progressToken": token, "progress": i, "total": steps,
                                       "message": format!("step {i} of {steps}")}
                        });
                        self.send(serde_json::to_vec(&note).unwrap_or_default())
                            .await;
                    }
                }
                Ok(text_result(&format!("done after {steps} steps"), false))
            }
            "sample" => {
                let prompt = args
                    .get("prompt")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("`prompt` (a string) is required"))?;
                match self.sample(prompt).await {
                    Ok(answer) => Ok(text_result(&format!("client said: {answer}"), false)),
                    Err(message) => Ok(text_result(&message, true)),
                }
            }
            "crash" => {
                let code = args.get("code").and_then(Value::as_i64).unwrap_or(70);
                tracing::warn!("crash tool called: exiting with status {code}");
                std::process::exit(i32::try_from(code).unwrap_or(70));
            }
            _ => Err((jsonrpc::INVALID_PARAMS, format!("unknown tool: {name}"))),
        }
    }

    /// Sends `sampling/createMessage` to the client and returns the text it answered.
    async fn sample(&self, prompt: &str) -> Result<String, String> {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let id = Id::Num(n.to_string().into());
        let (tx, rx) = oneshot::channel();
        self.lock_replies().insert(id.clone(), tx);
        let req = json!({
            "jsonrpc": "2.0",
            "id": n,
            "method": "sampling/createMessage",
            "params": {
                "messages": [{"role": "user", "content": {"type": "text", "text": prompt}}],
                "maxTokens": 100
            }
        });
        self.send(serde_json::to_vec(&req).unwrap_or_default())
            .await;
        let outcome = tokio::time::timeout(SAMPLE_TIMEOUT, rx).await;
        self.lock_replies().remove(&id);
        match outcome {
            Ok(Ok(Ok(result))) => Ok(result
                .pointer("/content/text")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()),
            Ok(Ok(Err(error))) => Err(format!(
                "the client refused to sample: {}",
                error
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("no reason given")
            )),
            Ok(Err(_)) => Err("the session ended before the client answered".into()),
            Err(_) => Err("the client did not answer the sampling request within 60 s".into()),
        }
    }

    fn lock_replies(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<Id, oneshot::Sender<Result<Value, Value>>>> {
        self.replies.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_in_flight(&self) -> std::sync::MutexGuard<'_, HashMap<Id, CancellationToken>> {
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

fn text_result(text: &str, is_error: bool) -> Value {
    json!({"content": [{"type": "text", "text": text}], "isError": is_error})
}

fn tool_list() -> Value {
    json!([
        {
            "name": "echo",
            "description": "Returns the text it is given.",
            "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
        },
        {
            "name": "add",
            "description": "Adds two numbers.",
            "inputSchema": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]}
        },
        {
            "name": "slow",
            "description": "Takes `steps` steps of `delay_ms` each, reporting progress; can be cancelled.",
            "inputSchema": {"type": "object", "properties": {
                "steps": {"type": "integer", "minimum": 0, "default": 3},
                "delay_ms": {"type": "integer", "minimum": 0, "default": 50}
            }}
        },
        {
            "name": "crash",
            "description": "Ends the demo tool's process at once with exit status `code` (default 70), to see how a client copes with a crashing tool.",
            "inputSchema": {"type": "object", "properties": {"code": {"type": "integer", "default": 70}}}
        },
        {
            "name": "sample",
            "description": "Asks the client to sample an LLM with the prompt, and returns its answer.",
            "inputSchema": {"type": "object", "properties": {"prompt": {"type": "string"}}, "required": ["prompt"]}
        }
    ])
}
