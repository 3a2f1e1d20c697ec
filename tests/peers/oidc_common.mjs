// What the two oidc-provider test peers (oauth_server.mjs, idp_server.mjs) share: the pinned
// node modules, their command-line options, an in-memory storage adapter, a loopback listen and
// a JSON answer. Not the provider's configuration, nor either peer's admin routes.
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

// The pinned modules come from $PEERS_NODE_MODULES (default <repo>/.peers/node/node_modules).
const here = path.dirname(fileURLToPath(import.meta.url));
const NM = path.resolve(process.env.PEERS_NODE_MODULES || path.join(here, '..', '..', '.peers', 'node', 'node_modules'));
export const importPeer = (...parts) => import(pathToFileURL(path.join(NM, ...parts)).href);

const args = process.argv.slice(2);
export const flag = (name) => args.includes(name);
export const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt;
};

// A plain in-memory adapter; `stores` (model name -> Map) lets an admin route drop tokens, and
// outlives a provider rebuilt over it.
export const stores = new Map();
export class MemoryAdapter {
  constructor(name) {
    this.name = name;
    if (!stores.has(name)) stores.set(name, new Map());
    this.store = stores.get(name);
  }
  async upsert(id, payload, expiresIn) {
    this.store.set(id, { payload, expiresAt: expiresIn ? Date.now() + expiresIn * 1000 : null });
  }
  async find(id) {
    const e = this.store.get(id);
    if (!e) return undefined;
    if (e.expiresAt && e.expiresAt < Date.now()) { this.store.delete(id); return undefined; }
    return e.payload;
  }
  async findByUserCode(code) {
    for (const [, e] of this.store) if (e.payload.userCode === code) return e.payload;
    return undefined;
  }
  async findByUid(uid) {
    for (const [, e] of this.store) if (e.payload.uid === uid) return e.payload;
    return undefined;
  }
  async consume(id) {
    const e = this.store.get(id);
    if (e) e.payload.consumed = Math.floor(Date.now() / 1000);
  }
  async destroy(id) { this.store.delete(id); }
  async revokeByGrantId(grantId) {
    for (const [id, e] of this.store) if (e.payload.grantId === grantId) this.store.delete(id);
  }
}

// Listens on an OS-picked port on 127.0.0.1; resolves to the port.
export const listen = (server) => new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server.address().port)));

export const json = (res, status, body, headers = {}) => {
  res.writeHead(status, { 'Content-Type': 'application/json', ...headers });
  res.end(JSON.stringify(body));
};
