// A real OAuth 2.1 authorization server (oidc-provider, pinned in package.json) and a tiny
// protected MCP resource in front of it, both on 127.0.0.1 with OS-picked ports, for the
// bridge-client sign-in tests.
//
//   node oauth_server.mjs [--access-ttl SECS] [--no-pkce]
//
// Prints one JSON line on stdout once both listen:
//   {"issuer": "...", "mcp_url": "http://127.0.0.1:R/mcp", "admin_url": "http://127.0.0.1:R/admin"}
// then serves until killed. Admin (test-only) routes on the resource port:
//   POST /admin/revoke-refresh-tokens   drops every refresh token (the next refresh gets invalid_grant)
//   GET  /admin/stats                   {"registrations": n, "authorizations": n, "refreshes": n, "revocations": n, "accepted": n, "refused": n}
// Access tokens are opaque; the resource checks them with the provider's own store, and their
// audience (RFC 8707 resource indicators). With a valid token it answers MCP `initialize`,
// `tools/list` and `tools/call` (one tool, `whoami`) as JSON; notifications get 202, GET 405.
import http from 'node:http';
import { flag, importPeer, json, listen, MemoryAdapter, opt, stores } from './oidc_common.mjs';

const { default: Provider, errors } = await importPeer('oidc-provider', 'lib', 'index.js');

const accessTtl = Number(opt('--access-ttl', '3600'));
const noPkce = flag('--no-pkce');

const stats = { registrations: 0, authorizations: 0, refreshes: 0, revocations: 0, accepted: 0, refused: 0 };

const asServer = http.createServer();
const rsServer = http.createServer();
const asPort = await listen(asServer);
const rsPort = await listen(rsServer);
const issuer = `http://127.0.0.1:${asPort}`;
const resource = `http://127.0.0.1:${rsPort}/mcp`;
const prmPath = '/.well-known/oauth-protected-resource/mcp';

const provider = new Provider(issuer, {
  adapter: MemoryAdapter,
  clients: [],
  cookies: { keys: ['mcp-bridge-test-cookie-key'] },
  findAccount: async (_ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
  features: {
    devInteractions: { enabled: true },
    registration: { enabled: true },
    revocation: { enabled: true },
    deviceFlow: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => resource,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, indicator) => {
        if (indicator !== resource) throw new errors.InvalidTarget();
        return { scope: 'mcp', audience: resource, accessTokenTTL: accessTtl, accessTokenFormat: 'opaque' };
      },
    },
  },
  pkce: { required: () => true },
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  scopes: ['openid', 'offline_access'],
  ttl: { AccessToken: accessTtl },
});
provider.on('registration_create.success', () => { stats.registrations += 1; });
provider.on('authorization.success', () => { stats.authorizations += 1; });
provider.on('grant.success', (ctx) => {
  if (ctx.oidc?.params?.grant_type === 'refresh_token') stats.refreshes += 1;
});
if (noPkce) {
  // An authorization server that does not advertise PKCE: the client must refuse it.
  provider.use(async (ctx, next) => {
    await next();
    if (ctx.path.includes('/.well-known/') && ctx.body && typeof ctx.body === 'object') {
      delete ctx.body.code_challenge_methods_supported;
    }
  });
}
// Counts token revocations (RFC 7009) the provider answered with 200.
provider.use(async (ctx, next) => {
  await next();
  if (ctx.method === 'POST' && ctx.path === '/token/revocation' && ctx.status === 200) stats.revocations += 1;
});
asServer.on('request', provider.callback());

rsServer.on('request', async (req, res) => {
  const url = new URL(req.url, resource);
  try {
    if (req.method === 'GET' && url.pathname === prmPath) {
      return json(res, 200, {
        resource,
        authorization_servers: [issuer],
        scopes_supported: ['mcp'],
        bearer_methods_supported: ['header'],
      });
    }
    if (req.method === 'POST' && url.pathname === '/admin/revoke-refresh-tokens') {
      const n = stores.get('RefreshToken')?.size ?? 0;
      stores.get('RefreshToken')?.clear();
      return json(res, 200, { revoked: n });
    }
    if (req.method === 'GET' && url.pathname === '/admin/stats') return json(res, 200, stats);
    if (url.pathname !== '/mcp') return json(res, 404, { error: 'not found' });
    let body = '';
    for await (const chunk of req) body += chunk;
    const auth = req.headers.authorization ?? '';
    const token = auth.startsWith('Bearer ') ? auth.slice(7) : null;
    const at = token ? await provider.AccessToken.find(token) : undefined;
    const aud = at ? [].concat(at.aud ?? []) : [];
    if (!at || at.isExpired || !aud.includes(resource)) {
      stats.refused += 1;
      const error = token ? ', error="invalid_token"' : '';
      res.writeHead(401, {
        'WWW-Authenticate': `Bearer resource_metadata="http://127.0.0.1:${rsPort}${prmPath}", scope="mcp"${error}`,
        'Content-Type': 'application/json',
      });
      return res.end(JSON.stringify({ error: 'unauthorized' }));
    }
    stats.accepted += 1;
    // A minimal MCP server (stateless, JSON answers): initialize, tools/list, tools/call.
    if (req.method === 'GET') return json(res, 405, { error: 'no stream here' });
    if (req.method === 'DELETE') return json(res, 200, {});
    let msg = {};
    try { msg = JSON.parse(body); } catch { /* not JSON */ }
    const id = msg.id ?? null;
    if (id === null) { res.writeHead(202); return res.end(); }
    const answer = (result) => json(res, 200, { jsonrpc: '2.0', id, result });
    switch (msg.method) {
      case 'initialize':
        return answer({ protocolVersion: msg.params?.protocolVersion ?? '2025-11-25', capabilities: { tools: {} }, serverInfo: { name: 'protected-test', version: '1' } });
      case 'tools/list':
        return answer({ tools: [{ name: 'whoami', description: 'Says who is signed in', inputSchema: { type: 'object', properties: {} } }] });
      case 'tools/call':
        return answer({ content: [{ type: 'text', text: `signed in as ${at.accountId}` }] });
      default:
        return json(res, 200, { jsonrpc: '2.0', id, error: { code: -32601, message: `no method ${msg.method}` } });
    }
  } catch (e) {
    process.stderr.write(`oauth_server: ${e.stack}\n`);
    return json(res, 500, { error: 'server_error' });
  }
});

process.stdout.write(`${JSON.stringify({ issuer, mcp_url: resource, admin_url: `http://127.0.0.1:${rsPort}/admin` })}\n`);
