#!/usr/bin/env node
// A Streamable HTTP (2025-11-25) client over HTTP/2, on Node's own `node:http2` (nghttp2): an
// independent HTTP/2 stack to check the relay's. Cleartext URLs use prior knowledge (h2c);
// https URLs negotiate h2 by ALPN (checked), trusting --ca FILE.
//
// Usage: node tests/peers/h2_client.mjs --url http(s)://HOST:PORT/mcp/TOOL [--ca FILE]
//        [--calls N] [--token T] [--timeout SECONDS]
//
// One connection: initialize, notifications/initialized, then N `echo` calls at once (one
// stream each, multiplexed), every answer matched to its call, then DELETE. The tool must be
// the relay's demo tool (an `echo` tool). Progress goes to stderr; the LAST stdout line is
// one JSON summary {"ok": true|false, "checks": [...], "failed"?: name, "error"?: msg, ...}.
// Exit codes: 0 success, 1 a check failed, 2 bad usage, 3 overall timeout.

import http2 from 'node:http2';
import fs from 'node:fs';

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt;
};
const url = opt('--url');
if (!url) {
  process.stderr.write('usage: h2_client.mjs --url URL [--ca FILE] [--calls N]\n');
  process.exit(2);
}
const calls = Number(opt('--calls', '20'));
const token = opt('--token');
const ca = opt('--ca');
const timeoutS = Number(opt('--timeout', '30'));
const log = (m) => process.stderr.write(`h2_client: ${m}\n`);

const summary = { ok: false, checks: [] };
const done = (ok, extra = {}) => {
  Object.assign(summary, extra, { ok });
  process.stdout.write(JSON.stringify(summary) + '\n');
  process.exit(ok ? 0 : 1);
};
setTimeout(() => {
  process.stdout.write(JSON.stringify({ ...summary, ok: false, failed: 'timeout', error: `over ${timeoutS} s` }) + '\n');
  process.exit(3);
}, timeoutS * 1000).unref();

const target = new URL(url);
const session = http2.connect(target.origin, ca ? { ca: fs.readFileSync(ca) } : {});
session.on('error', (e) => done(false, { failed: 'connection', error: String(e) }));

// One request on its own stream; resolves with {status, headers, body}.
function request(method, headers, body) {
  return new Promise((resolve, reject) => {
    const h = {
      ':method': method,
      ':path': target.pathname,
      accept: 'application/json, text/event-stream',
      ...headers,
    };
    if (token) h.authorization = `Bearer ${token}`;
    if (body !== undefined) h['content-type'] = 'application/json';
    const s = session.request(h);
    let status = 0;
    let rh = {};
    const chunks = [];
    s.on('response', (headers_) => { rh = headers_; status = headers_[':status']; });
    s.on('data', (c) => chunks.push(c));
    s.on('end', () => resolve({ status, headers: rh, body: Buffer.concat(chunks).toString('utf8') }));
    s.on('error', reject);
    if (body !== undefined) s.end(body); else s.end();
  });
}

// The JSON-RPC messages of an answer: one JSON body, or the `data:` of each SSE event.
function messages(r) {
  const type = String(r.headers['content-type'] || '');
  if (type.startsWith('application/json')) return [JSON.parse(r.body)];
  return r.body.split('\n\n')
    .map((ev) => ev.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim()).join('\n'))
    .filter((d) => d.length > 0)
    .map((d) => JSON.parse(d));
}

const check = (cond, name, msg) => {
  if (!cond) done(false, { failed: name, error: msg });
  summary.checks.push(name);
};

try {
  await new Promise((resolve, reject) => { session.once('connect', resolve); session.once('error', reject); });
  summary.alpn = session.alpnProtocol;
  if (target.protocol === 'https:') check(session.alpnProtocol === 'h2', 'alpn_h2', `ALPN chose ${session.alpnProtocol}`);
  const init = await request('POST', {}, JSON.stringify({
    jsonrpc: '2.0', id: 0, method: 'initialize',
    params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'h2_client', version: '1' } },
  }));
  const sid = init.headers['mcp-session-id'];
  const initAnswer = messages(init).find((m) => m.id === 0);
  check(init.status === 200 && sid && initAnswer?.result, 'initialize', `${init.status} ${init.body}`);
  const common = { 'mcp-session-id': sid, 'mcp-protocol-version': '2025-11-25' };
  const note = await request('POST', common, JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }));
  check(note.status === 202, 'initialized', `${note.status} ${note.body}`);

  // N calls at once, each on its own stream of the one connection.
  const answers = await Promise.all(Array.from({ length: calls }, (_, i) => request('POST', common, JSON.stringify({
    jsonrpc: '2.0', id: i + 1, method: 'tools/call', params: { name: 'echo', arguments: { text: `h2-${i}` } },
  }))));
  const wrong = answers.map((r, i) => {
    const m = messages(r).find((x) => x.id === i + 1);
    return r.status === 200 && m?.result?.content?.[0]?.text === `h2-${i}` ? null : `${i}: ${r.status} ${r.body}`;
  }).filter((x) => x !== null);
  check(wrong.length === 0, 'concurrent_calls', wrong.slice(0, 3).join('; '));
  summary.calls = calls;

  const bye = await request('DELETE', common);
  check(bye.status === 200 || bye.status === 204, 'delete', `${bye.status} ${bye.body}`);
  session.close();
  log(`ok over ${session.alpnProtocol ?? 'h2c'}: ${calls} concurrent calls`);
  done(true);
} catch (e) {
  done(false, { failed: summary.checks.length ? 'after_' + summary.checks[summary.checks.length - 1] : 'connect', error: String(e?.stack ?? e) });
}
