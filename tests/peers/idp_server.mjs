// An identity provider for the relay's resource-server tests: oidc-provider (pinned in
// package.json) over HTTPS with a test CA on 127.0.0.1 (OS-picked port), issuing JWT access
// tokens (RFC 9068) for any resource indicator, with PKCE, dynamic registration, refresh
// tokens, and its devInteractions login/consent forms (tests/peers/oauth_browser.py fills them).
//
//   node idp_server.mjs --cert server.pem --key server.key [--access-ttl SECS] [--scopes "a b"]
//
// Prints one JSON line on stdout once it listens:
//   {"issuer": "https://127.0.0.1:P", "admin_url": "http://127.0.0.1:A/admin"}
// then serves until killed (killing it is how a test takes the provider down). Admin
// (test-only, plain http on loopback) routes:
//   POST /admin/rotate   a new signing key; the JWKS publishes it first, the old one after it
//   POST /admin/mint     {"claims": {...}, "rogue": bool} -> {"token": "..."}: a JWT signed with
//                        the current key (or, with rogue, a key the JWKS never publishes);
//                        defaults iss, sub "alice", iat, exp (+300 s), groups ["eng", "ops"]
//   GET  /admin/stats    {"kid": current kid, "keys": n, "jwks_requests": n}
// Access tokens carry `groups` (["eng", "ops"]) and the granted `scope`.
import http from 'node:http';
import https from 'node:https';
import fs from 'node:fs';
import crypto from 'node:crypto';
import { importPeer, json, listen, MemoryAdapter, opt } from './oidc_common.mjs';

const { default: Provider } = await importPeer('oidc-provider', 'lib', 'index.js');
const jose = await importPeer('jose', 'dist', 'webapi', 'index.js');

const accessTtl = Number(opt('--access-ttl', '600'));
const scopes = opt('--scopes', 'mcp:demo mcp:time');
const tls = { cert: fs.readFileSync(opt('--cert')), key: fs.readFileSync(opt('--key')) };

const newKey = async () => {
  const { privateKey } = await jose.generateKeyPair('RS256', { extractable: true });
  const jwk = await jose.exportJWK(privateKey);
  return { ...jwk, kid: crypto.randomUUID(), alg: 'RS256', use: 'sig' };
};
const keys = [await newKey()];
const rogue = await newKey();
const stats = { jwks_requests: 0 };

const asServer = https.createServer(tls);
const adminServer = http.createServer();
const asPort = await listen(asServer);
const adminPort = await listen(adminServer);
const issuer = `https://127.0.0.1:${asPort}`;

const makeProvider = () => {
  const p = new Provider(issuer, {
    adapter: MemoryAdapter,
    clients: [],
    jwks: { keys },
    cookies: { keys: ['mcp-bridge-test-cookie-key'] },
    findAccount: async (_ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
    extraTokenClaims: async () => ({ groups: ['eng', 'ops'] }),
    features: {
      devInteractions: { enabled: true },
      registration: { enabled: true },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => undefined,
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx, indicator) => ({
          scope: scopes,
          audience: indicator,
          accessTokenTTL: accessTtl,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        }),
      },
    },
    pkce: { required: () => true },
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    scopes: ['openid', 'offline_access'],
    ttl: { AccessToken: accessTtl },
  });
  p.proxy = false;
  return p.callback();
};
let handler = makeProvider();
asServer.on('request', (req, res) => {
  if (req.url.startsWith('/jwks')) stats.jwks_requests += 1;
  handler(req, res);
});

adminServer.on('request', async (req, res) => {
  try {
    let body = '';
    for await (const chunk of req) body += chunk;
    const url = new URL(req.url, 'http://x');
    if (req.method === 'POST' && url.pathname === '/admin/rotate') {
      keys.unshift(await newKey());
      handler = makeProvider();
      return json(res, 200, { kid: keys[0].kid, keys: keys.length });
    }
    if (req.method === 'POST' && url.pathname === '/admin/mint') {
      const spec = body ? JSON.parse(body) : {};
      const key = spec.rogue ? rogue : keys[0];
      const now = Math.floor(Date.now() / 1000);
      const claims = { iss: issuer, sub: 'alice', iat: now, exp: now + 300, groups: ['eng', 'ops'], ...spec.claims };
      for (const [k, v] of Object.entries(claims)) if (v === null) delete claims[k];
      const token = await new jose.SignJWT(claims)
        .setProtectedHeader({ alg: 'RS256', kid: key.kid, typ: 'at+jwt' })
        .sign(await jose.importJWK(key, 'RS256'));
      return json(res, 200, { token });
    }
    if (req.method === 'GET' && url.pathname === '/admin/stats') {
      return json(res, 200, { kid: keys[0].kid, keys: keys.length, ...stats });
    }
    return json(res, 404, { error: 'not found' });
  } catch (e) {
    process.stderr.write(`idp_server: ${e.stack}\n`);
    return json(res, 500, { error: String(e) });
  }
});

process.stdout.write(`${JSON.stringify({ issuer, admin_url: `http://127.0.0.1:${adminPort}/admin` })}\n`);
