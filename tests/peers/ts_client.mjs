#!/usr/bin/env node
// A real MCP client (TypeScript SDK @modelcontextprotocol/sdk 1.32.2) that drives a server
// through a scenario, over stdio (spawning CMD ARGS), WebSocket (--url, subprotocol "mcp") or
// Streamable HTTP (--transport http --url http://...).
//
// Usage:
//   node tests/peers/ts_client.mjs --transport stdio --scenario everything|demo -- CMD ARGS...
//   node tests/peers/ts_client.mjs --transport ws --url ws://127.0.0.1:PORT/PATH --scenario everything|demo
//   node tests/peers/ts_client.mjs --transport http --url http://127.0.0.1:PORT/PATH --scenario everything|demo
// Options: --timeout SECONDS (overall, default 60), --call-timeout SECONDS (per request, default 20)
//
// Modules come from $PEERS_NODE_MODULES (default <repo>/.peers/node/node_modules; see
// scripts/install-peers.sh). Progress goes to stderr; the LAST stdout line is one JSON summary
// {"ok": true|false, "checks": [...], "failed"?: name, "error"?: msg, ...}.
// Exit codes: 0 success, 1 a check failed, 2 bad usage / SDK missing, 3 overall timeout.

import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';

const T0 = Date.now();
const log = (msg) => process.stderr.write(`ts_client [${((Date.now() - T0) / 1000).toFixed(2).padStart(6)}s] ${msg}\n`);

// ------------------------------------------------------------------ report
const report = { checks: [], info: {}, current: 'setup', printed: false, scenario: null, transport: null };
function emit(ok, extra = {}) {
  if (report.printed) return;
  report.printed = true;
  const out = {
    ok, scenario: report.scenario, transport: report.transport, checks: report.checks,
    ...extra, ...report.info, elapsed_s: Math.round((Date.now() - T0) / 10) / 100,
  };
  process.stdout.write(JSON.stringify(out) + '\n');
}
class CheckFailed extends Error {
  constructor(check, message) { super(`${check}: ${message}`); this.check = check; this.detail = message; }
}
const expect = (cond, check, message) => { if (!cond) throw new CheckFailed(check, message); };
const begin = (name) => { report.current = name; log(`-> ${name}`); };
const ok = (detail = '') => { report.checks.push(report.current); log(`ok ${report.current}${detail ? ': ' + detail : ''}`); };
const short = (x, n = 300) => { const s = typeof x === 'string' ? x : JSON.stringify(x); return s.length <= n ? s : s.slice(0, n) + '...'; };
const texts = (r) => (r?.content ?? []).filter((c) => c.type === 'text').map((c) => c.text);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const cleanups = [];
function fail(code, check, message) {
  log(`FAILED ${check}: ${message}`);
  emit(false, { failed: check, error: message });
  for (const fn of cleanups) { try { fn(); } catch { /* best effort */ } }
  process.exit(code);
}

// ------------------------------------------------------------------ args
function usage(msg) {
  if (msg) process.stderr.write(`ts_client: ${msg}\n`);
  process.stderr.write('usage: ts_client.mjs --transport stdio|ws --scenario everything|demo [--url ws://...] '
    + '[--timeout S] [--call-timeout S] [-- CMD ARGS...]\n');
  emit(false, { failed: 'usage', error: msg || 'bad usage' });
  process.exit(2);
}
const argv = process.argv.slice(2);
const dd = argv.indexOf('--');
const opts = dd >= 0 ? argv.slice(0, dd) : argv;
const cmd = dd >= 0 ? argv.slice(dd + 1) : [];
const args = { transport: 'stdio', scenario: null, url: null, timeout: 60, callTimeout: 20 };
for (let i = 0; i < opts.length; i++) {
  const k = opts[i];
  const v = opts[i + 1];
  if (k === '--transport') { args.transport = v; i++; }
  else if (k === '--scenario') { args.scenario = v; i++; }
  else if (k === '--url') { args.url = v; i++; }
  else if (k === '--timeout') { args.timeout = Number(v); i++; }
  else if (k === '--call-timeout') { args.callTimeout = Number(v); i++; }
  else if (k === '-h' || k === '--help') usage();
  else usage(`unknown option ${k}`);
}
report.scenario = args.scenario;
report.transport = args.transport;
if (!['everything', 'demo'].includes(args.scenario)) usage('--scenario must be everything or demo');
if (!['stdio', 'ws', 'http'].includes(args.transport)) usage('--transport must be stdio, ws or http');
if (args.transport === 'stdio' && cmd.length === 0) usage('--transport stdio needs the server command after --');
if (args.transport !== 'stdio' && !args.url) usage(`--transport ${args.transport} needs --url`);
if (!(args.timeout > 0) || !(args.callTimeout > 0)) usage('timeouts must be positive numbers');

// ------------------------------------------------------------------ SDK
const here = path.dirname(fileURLToPath(import.meta.url));
const NM = path.resolve(process.env.PEERS_NODE_MODULES || path.join(here, '..', '..', '.peers', 'node', 'node_modules'));
if (!fs.existsSync(path.join(NM, '@modelcontextprotocol', 'sdk', 'package.json'))) {
  log(`@modelcontextprotocol/sdk not found under ${NM}: run scripts/install-peers.sh (or set PEERS_NODE_MODULES)`);
  emit(false, { failed: 'sdk_import', error: `no @modelcontextprotocol/sdk in ${NM}` });
  process.exit(2);
}
// Resolve as if from a file beside NM, so `require('x')` finds NM/x (the CJS build of the SDK).
const require = createRequire(path.join(path.dirname(NM), '__peers_resolve__.cjs'));
const { Client } = require('@modelcontextprotocol/sdk/client/index.js');
const { StdioClientTransport } = require('@modelcontextprotocol/sdk/client/stdio.js');
const { WebSocketClientTransport } = require('@modelcontextprotocol/sdk/client/websocket.js');
const { StreamableHTTPClientTransport } = require('@modelcontextprotocol/sdk/client/streamableHttp.js');
const { CreateMessageRequestSchema, ToolListChangedNotificationSchema, McpError } = require('@modelcontextprotocol/sdk/types.js');
const sdkVersion = JSON.parse(fs.readFileSync(path.join(NM, '@modelcontextprotocol', 'sdk', 'package.json'), 'utf8')).version;
report.info.sdk_version = sdkVersion;
// Node 20 has no global WebSocket; the SDK's transport does `new WebSocket(url, "mcp")`.
const WS = require('ws');
globalThis.WebSocket = WS.WebSocket || WS;

// ------------------------------------------------------------------ wire tap
class TapTransport {
  constructor(inner) {
    this.inner = inner;
    this.messages = [];
    this.closed = false;
    this.closedPromise = new Promise((resolve) => { this._resolveClosed = resolve; });
    inner.onmessage = (m, extra) => { this.messages.push(['in', m]); this.onmessage?.(m, extra); };
    inner.onerror = (e) => { log(`transport error: ${e?.message ?? e}`); this.onerror?.(e); };
    inner.onclose = () => { this.closed = true; this._resolveClosed(); this.onclose?.(); };
  }
  start() { return this.inner.start(); }
  send(m, o) { this.messages.push(['out', m]); return this.inner.send(m, o); }
  close() { return this.inner.close(); }
  get sessionId() { return this.inner.sessionId; }
  setProtocolVersion(v) { this.protocolVersion = v; this.inner.setProtocolVersion?.(v); }
  requests(dir, method) { return this.messages.filter(([d, m]) => d === dir && m.method && m.id !== undefined && (!method || m.method === method)).map(([, m]) => m); }
  notifications(dir, method) { return this.messages.filter(([d, m]) => d === dir && m.method === method && m.id === undefined).map(([, m]) => m); }
}

// ------------------------------------------------------------------ scenario
const nonce = randomBytes(4).toString('hex');
const demo = args.scenario === 'demo';
const samplingReply = demo ? 'pong-from-client' : `sampled-by-ts-client-${nonce}`;
const samplingCalls = [];
let toolsChanged = 0;
let toolsChangedWaiter = null;
const callOpts = (extra = {}) => ({ timeout: args.callTimeout * 1000, ...extra });

async function withTimeout(promise, ms, check, what) {
  let timer;
  const t = new Promise((_, reject) => { timer = setTimeout(() => reject(new CheckFailed(check, `${what} did not finish within ${ms} ms`)), ms); });
  try { return await Promise.race([promise, t]); } finally { clearTimeout(timer); }
}

async function scenario() {
  begin('connect');
  let inner;
  if (args.transport === 'stdio') {
    // The SDK passes only HOME/LOGNAME/PATH/SHELL/TERM/USER by default: hand on the whole env.
    inner = new StdioClientTransport({ command: cmd[0], args: cmd.slice(1), env: { ...process.env }, stderr: 'inherit' });
    report.info.server_cmd = cmd;
    // On a failed check we exit at once: do not leave the spawned server behind.
    cleanups.push(() => { if (inner.pid) process.kill(inner.pid, 'SIGKILL'); });
  } else if (args.transport === 'http') {
    inner = new StreamableHTTPClientTransport(new URL(args.url));
    report.info.url = args.url;
  } else {
    inner = new WebSocketClientTransport(new URL(args.url));
    report.info.url = args.url;
  }
  const tap = new TapTransport(inner);
  const client = new Client({ name: 'mcp-bridge-ts-peer', version: '1.0' }, { capabilities: { sampling: {} } });
  client.onerror = (e) => log(`client onerror (diagnostic): ${e?.message ?? e}`);
  client.setRequestHandler(CreateMessageRequestSchema, async (request, extra) => {
    samplingCalls.push({ id: extra?.requestId, params: request.params });
    log(`sampling/createMessage request id=${JSON.stringify(extra?.requestId)} maxTokens=${request.params.maxTokens}`);
    return { role: 'assistant', content: { type: 'text', text: samplingReply }, model: 'ts-peer-model', stopReason: 'endTurn' };
  });
  client.setNotificationHandler(ToolListChangedNotificationSchema, async () => {
    toolsChanged++;
    toolsChangedWaiter?.();
  });
  await withTimeout(client.connect(tap, callOpts()), args.callTimeout * 1000, 'connect', 'connect/initialize');
  const initResp = tap.messages.find(([d, m]) => d === 'in' && m.result?.protocolVersion)?.[1];
  const sv = client.getServerVersion();
  report.info.protocol_version = initResp?.result?.protocolVersion;
  report.info.server_info = sv;
  expect(sv?.name && report.info.protocol_version, 'connect', 'no serverInfo / protocolVersion in the initialize result');
  ok(`protocol ${report.info.protocol_version}, server ${sv.name} ${sv.version ?? ''}`);

  // ---- tools/list
  let tools;
  if (!demo) {
    begin('tools_list_changed');
    if (toolsChanged === 0) {
      await Promise.race([new Promise((r) => { toolsChangedWaiter = r; }), sleep(5000)]);
    }
    expect(toolsChanged > 0, 'tools_list_changed', 'no notifications/tools/list_changed within 5 s of initialized');
    ok(`${toolsChanged} so far`);
  }
  begin('list_tools');
  const wanted = demo ? ['echo', 'add', 'slow', 'sample'] : ['echo', 'get-sum', 'trigger-long-running-operation', 'trigger-sampling-request'];
  const deadline = Date.now() + 5000;
  for (;;) {
    tools = (await client.listTools(undefined, callOpts())).tools;
    const names = new Set(tools.map((t) => t.name));
    if (wanted.every((w) => names.has(w)) || Date.now() > deadline) break;
    await sleep(200);
  }
  const names = tools.map((t) => t.name);
  const missing = wanted.filter((w) => !names.includes(w));
  expect(missing.length === 0, 'list_tools', `missing ${missing.join(', ')}; got ${names.join(', ')}`);
  for (const t of tools.filter((t) => wanted.includes(t.name))) {
    expect(t.inputSchema?.type === 'object' && (!demo || t.description), 'list_tools', `tool ${t.name} lacks a description or an object inputSchema`);
  }
  report.info.tool_count = tools.length;
  ok(`${tools.length} tools`);

  // ---- echo
  begin('echo');
  const msg = `hello from ts ${nonce} ✓ "q" \\ \n line2`;
  let r = await client.callTool({ name: 'echo', arguments: demo ? { text: msg } : { message: msg } }, undefined, callOpts());
  const wantEcho = demo ? msg : `Echo: ${msg}`;
  expect(!r.isError && texts(r)[0] === wantEcho, 'echo', `got ${short(texts(r))}`);
  ok();

  // ---- add / get-sum
  if (demo) {
    begin('add');
    r = await client.callTool({ name: 'add', arguments: { a: 2, b: 3 } }, undefined, callOpts());
    expect(!r.isError && texts(r)[0] === '5', 'add', `2+3 gave ${short(texts(r))}`);
    r = await client.callTool({ name: 'add', arguments: { a: 1, b: 1.5 } }, undefined, callOpts());
    expect(!r.isError && texts(r)[0] === '2.5', 'add', `1+1.5 gave ${short(texts(r))}`);
    ok();
  } else {
    begin('get_sum');
    r = await client.callTool({ name: 'get-sum', arguments: { a: 2, b: 3.5 } }, undefined, callOpts());
    expect(!r.isError && (texts(r)[0] ?? '').includes('is 5.5'), 'get_sum', `got ${short(texts(r))}`);
    ok(texts(r)[0]);
  }

  // ---- progress
  begin('progress');
  const progress = [];
  const onprogress = (p) => { progress.push(p); log(`   progress ${p.progress}/${p.total} ${p.message ?? ''}`); };
  if (demo) {
    r = await client.callTool({ name: 'slow', arguments: { steps: 4, delay_ms: 50 } }, undefined, callOpts({ onprogress }));
    expect(!r.isError && texts(r)[0] === 'done after 4 steps', 'progress', `got ${short(texts(r))}`);
  } else {
    r = await client.callTool({ name: 'trigger-long-running-operation', arguments: { duration: 1, steps: 4 } }, undefined, callOpts({ onprogress }));
    expect(!r.isError && /completed/i.test(texts(r)[0] ?? ''), 'progress', `got ${short(texts(r))}`);
  }
  // SDK quirk: notifications are dispatched a microtask later than responses, so a final progress
  // notification read in the same chunk as the result is dropped ("unknown token"). Accept 3 or 4.
  const seen = progress.map((p) => p.progress);
  expect(seen.length >= 3 && seen.every((v, i) => v === i + 1) && progress.every((p) => p.total === 4),
    'progress', `expected progress 1..4 (the last may race the result) of 4, got ${short(progress)}`);
  ok(`${progress.length} progress notifications`);

  // ---- sampling (server -> client request)
  begin('sampling');
  const prompt = `ping ${nonce}`;
  r = demo
    ? await client.callTool({ name: 'sample', arguments: { prompt } }, undefined, callOpts())
    : await client.callTool({ name: 'trigger-sampling-request', arguments: { prompt, maxTokens: 42 } }, undefined, callOpts());
  expect(samplingCalls.length > 0, 'sampling', 'the sampling handler was never invoked');
  const sp = samplingCalls.at(-1).params;
  const sentText = sp.messages?.[0]?.content?.text ?? '';
  if (demo) {
    expect(sentText === prompt && sp.messages[0].role === 'user' && sp.maxTokens === 100, 'sampling', `unexpected sampling request ${short(sp)}`);
    expect(!r.isError && texts(r)[0] === 'client said: pong-from-client', 'sampling', `got ${short(r)}`);
  } else {
    expect(sentText.includes(prompt) && sp.maxTokens === 42, 'sampling', `unexpected sampling request ${short(sp)}`);
    const all = texts(r).join('\n');
    expect(!r.isError && all.includes(samplingReply) && all.includes('ts-peer-model'), 'sampling', `tool result lacks the handler's answer: ${short(all)}`);
  }
  report.info.server_request_ids = tap.requests('in').map((m) => m.id);
  ok(`server request id=${JSON.stringify(samplingCalls.at(-1).id)}`);

  // ---- unknown tool (demo)
  if (demo) {
    begin('unknown_tool');
    let how;
    try {
      r = await client.callTool({ name: 'no-such-tool', arguments: {} }, undefined, callOpts());
      expect(r.isError, 'unknown_tool', `unknown tool succeeded: ${short(r)}`);
      how = 'isError result';
    } catch (e) {
      if (e instanceof CheckFailed) throw e;
      expect(e instanceof McpError && e.code === -32602 && String(e.message).includes('no-such-tool'), 'unknown_tool',
        `expected -32602 "unknown tool: no-such-tool", got ${e?.code} ${e?.message}`);
      how = `JSON-RPC error ${e.code}`;
    }
    ok(how);
    begin('echo_after_error');
    r = await client.callTool({ name: 'echo', arguments: { text: 'still alive' } }, undefined, callOpts());
    expect(texts(r)[0] === 'still alive', 'echo_after_error', `got ${short(texts(r))}`);
    ok();
  }

  // ---- cancel an in-flight call (AbortSignal -> notifications/cancelled)
  begin('cancel');
  const ac = new AbortController();
  const before = tap.requests('out', 'tools/call').length;
  const long = demo
    ? { name: 'slow', arguments: { steps: 50, delay_ms: 100 } }
    : { name: 'trigger-long-running-operation', arguments: { duration: 5, steps: 10 } };
  let firstProgress;
  const gotProgress = new Promise((res) => { firstProgress = res; });
  const pending = client.callTool(long, undefined, callOpts({ signal: ac.signal, onprogress: () => firstProgress() }))
    .then((res) => ({ res }), (err) => ({ err }));
  const raced = await Promise.race([gotProgress.then(() => 'progress'), sleep(10000).then(() => 'timeout')]);
  expect(raced === 'progress', 'cancel', `no progress from ${long.name} within 10 s; cannot test cancel`);
  ac.abort('cancelled by ts_client');
  const outcome = await withTimeout(pending, 5000, 'cancel', 'the aborted call');
  expect(outcome.err && !outcome.res, 'cancel', `the call was not cancelled: ${short(outcome.res ?? String(outcome.err))}`);
  const rid = tap.requests('out', 'tools/call')[before]?.id;
  const cancels = tap.notifications('out', 'notifications/cancelled').filter((n) => n.params?.requestId === rid);
  expect(rid !== undefined && cancels.length > 0, 'cancel', `no notifications/cancelled sent for request id ${rid}`);
  report.info.cancelled_request_id = rid;
  ok(`aborted tools/call id=${rid}; notifications/cancelled sent`);

  begin('after_cancel');
  await sleep(300);
  r = await client.callTool({ name: 'echo', arguments: demo ? { text: 'after cancel' } : { message: 'after cancel' } }, undefined, callOpts());
  expect(texts(r)[0] === (demo ? 'after cancel' : 'Echo: after cancel'), 'after_cancel', `got ${short(texts(r))}`);
  ok();

  // ---- ping
  begin('ping');
  await client.ping(callOpts());
  ok();

  // ---- close
  begin('close');
  const pid = args.transport === 'stdio' ? inner.pid : null;
  if (args.transport === 'http') {
    // Streamable HTTP: end the server's session (DELETE) before closing.
    await withTimeout(inner.terminateSession(), 5000, 'close', 'terminateSession()');
    report.info.session_terminated = true;
  }
  await withTimeout(client.close(), 8000, 'close', 'client.close()');
  await withTimeout(tap.closedPromise, 3000, 'close', 'transport onclose');
  if (pid) {
    let alive = true;
    for (let i = 0; i < 30 && alive; i++) {
      try { process.kill(pid, 0); await sleep(100); } catch { alive = false; }
    }
    expect(!alive, 'close', `server process ${pid} still running after close`);
  }
  ok(pid ? `server process ${pid} exited` : 'socket closed');
}

// ------------------------------------------------------------------ main
const watchdog = setTimeout(() => fail(3, report.current, `overall timeout of ${args.timeout} s exceeded`), args.timeout * 1000);
watchdog.unref();
process.on('unhandledRejection', (e) => log(`unhandled rejection: ${e?.stack ?? e}`));

log(`scenario ${args.scenario} over ${args.transport} (sdk ${sdkVersion}) ${args.transport === 'stdio' ? cmd.join(' ') : args.url}`);
try {
  await scenario();
} catch (e) {
  if (e instanceof CheckFailed) fail(1, e.check, e.detail);
  const code = e?.code !== undefined ? ` (code ${e.code})` : '';
  if (e?.stack) log(e.stack);
  fail(1, report.current, `${e?.name ?? 'Error'}${code}: ${e?.message ?? e}`);
}
emit(true);
log(`PASS ${args.scenario}: ${report.checks.length} checks`);
process.exit(0);
