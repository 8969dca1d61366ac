// OpenID Connect provider for the integration tests of sealsync (single sign-on and
// OAuth connect). Built on panva's oidc-provider 8; every piece of state is in memory.
//
//   npm ci --prefix scripts/oidc
//   node scripts/oidc/provider.mjs CONFIG.json
//
// CONFIG.json: {"clients": [oidc-provider client metadata...],
//               "accounts": [{"login", "sub", "email", "email_verified", "name"}...],
//               "access_token_ttl": 3600 (optional), "port": 0 (optional),
//               "rotate_refresh_tokens": false (optional: every refresh spends its token)}
//
// Listens on 127.0.0.1 only and, once ready, prints one line to stdout:
// {"issuer":"http://127.0.0.1:PORT"}. Everything else goes to stderr. It exits on
// SIGTERM/SIGINT and when its stdin, if that is a pipe or a socket, is closed.
//
// Interactions (no JavaScript): GET /interaction/:uid shows a login form;
// POST /interaction/:uid/login (login=alice) signs the account in and grants every
// requested scope and claim at once, so there is no consent page;
// POST /interaction/:uid/abort ends the request with access_denied.
import { generateKeyPairSync } from 'node:crypto';
import { readFileSync, fstatSync } from 'node:fs';
import http from 'node:http';
import Provider from 'oidc-provider';

// stdout carries only the ready line: oidc-provider prints its notices with console.info.
console.log = console.info = console.error;

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const accounts = config.accounts ?? [];

const jwk = (alg, type, opts) => ({
  ...generateKeyPairSync(type, opts).privateKey.export({ format: 'jwk' }), alg, use: 'sig', kid: alg,
});
const jwks = { keys: [jwk('RS256', 'rsa', { modulusLength: 2048 }), jwk('EdDSA', 'ed25519')] };

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const page = (res, status, title, body) => {
  res.writeHead(status, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' });
  res.end(`<!DOCTYPE html><html><head><title>${esc(title)}</title></head><body><h1>${esc(title)}</h1>${body}</body></html>`);
};
const readForm = (req) => new Promise((resolve, reject) => {
  let body = '';
  req.setEncoding('utf8');
  req.on('data', (chunk) => { body += chunk; if (body.length > 65536) req.destroy(); });
  req.on('end', () => resolve(new URLSearchParams(body)));
  req.on('error', reject);
});

const server = http.createServer();
await new Promise((resolve) => server.listen(config.port ?? 0, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients: config.clients,
  clientDefaults: { response_types: ['code'], token_endpoint_auth_method: 'client_secret_basic' },
  clientAuthMethods: ['client_secret_basic', 'client_secret_post'],
  responseTypes: ['code'],
  pkce: { methods: ['S256'], required: () => true },
  scopes: ['openid', 'email', 'profile', 'offline_access'],
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
  conformIdTokenClaims: false, // put the scope's claims into the ID token too
  async findAccount(ctx, sub) {
    const account = accounts.find((a) => a.sub === sub);
    if (!account) return undefined;
    return {
      accountId: sub,
      claims: () => ({
        sub, email: account.email, email_verified: account.email_verified, name: account.name,
      }),
    };
  },
  jwks,
  cookies: {
    keys: ['sealsync-test-oidc-cookie-key'],
    // SameSite=None without Secure is refused by browsers; lax also avoids the .legacy copies.
    long: { httpOnly: true, sameSite: 'lax', signed: true },
    short: { httpOnly: true, sameSite: 'lax', signed: true },
  },
  ttl: {
    AccessToken: config.access_token_ttl ?? 3600,
    AuthorizationCode: 600,
    IdToken: 3600,
    RefreshToken: 14 * 24 * 3600,
    Interaction: 3600,
    Session: 24 * 3600,
    Grant: 14 * 24 * 3600,
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  ...(config.rotate_refresh_tokens ? { rotateRefreshToken: true } : {}),
  features: {
    devInteractions: { enabled: false },
    revocation: { enabled: true },
    introspection: { enabled: true },
  },
});

// Grants every scope and claim the authorization request asked for.
async function grantAll(details, accountId) {
  const { params } = details;
  let grant = details.grantId && await provider.Grant.find(details.grantId);
  if (grant?.accountId !== accountId) grant = new provider.Grant({ accountId, clientId: params.client_id });
  if (params.scope) grant.addOIDCScope(params.scope);
  if (params.claims) {
    const { userinfo = {}, id_token: idToken = {} } = JSON.parse(params.claims);
    grant.addOIDCClaims([...Object.keys(userinfo), ...Object.keys(idToken)]);
  }
  return grant.save();
}

const callback = provider.callback();
server.on('request', async (req, res) => {
  const match = /^\/interaction\/([\w-]+)(\/login|\/abort)?$/.exec(req.url.split('?')[0]);
  if (!match) return callback(req, res);
  const [, uid, action] = match;
  try {
    const details = await provider.interactionDetails(req, res);
    if (details.uid !== uid) return page(res, 400, 'Interaction mismatch', '');
    if (!action && req.method === 'GET') {
      if (details.prompt.name === 'consent') { // signed in already: grant and go on
        const grantId = await grantAll(details, details.session.accountId);
        return provider.interactionFinished(req, res, { consent: { grantId } });
      }
      return page(res, 200, 'Sign in', `<form method="post" action="/interaction/${esc(uid)}/login">`
        + '<label>Login <input name="login" autofocus></label> <button type="submit">Sign in</button></form>'
        + `<form method="post" action="/interaction/${esc(uid)}/abort"><button type="submit">Cancel</button></form>`);
    }
    if (action === '/login' && req.method === 'POST') {
      const login = (await readForm(req)).get('login');
      const account = accounts.find((a) => a.login === login);
      if (!account) return page(res, 403, 'Unknown login', `<p>No account named ${esc(login ?? '')}.</p>`);
      const grantId = await grantAll(details, account.sub);
      return provider.interactionFinished(req, res, {
        login: { accountId: account.sub },
        consent: { grantId },
      }, { mergeWithLastSubmission: false });
    }
    if (action === '/abort' && req.method === 'POST') {
      return provider.interactionFinished(req, res, {
        error: 'access_denied', error_description: 'End-User aborted interaction',
      }, { mergeWithLastSubmission: false });
    }
    return page(res, 405, 'Method not allowed', '');
  } catch (err) {
    console.error(err);
    return page(res, 400, 'Interaction failed', `<p>${esc(err.message)}</p>`);
  }
});

const shutdown = () => { server.close(); process.exit(0); };
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
let stdin;
try { stdin = fstatSync(0); } catch { /* no stdin at all */ }
if (stdin?.isFIFO() || stdin?.isSocket()) {
  process.stdin.on('end', shutdown).on('close', shutdown).on('error', shutdown).resume();
}

process.stdout.write(`${JSON.stringify({ issuer })}\n`);
