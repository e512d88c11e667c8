// A real OpenID Connect provider for kith's SSO tests (npm `oidc-provider`, pinned in
// tests/clients/js/package.json).
//
//   node tests/peers/oidc_provider.mjs --port P --client-id ID --client-secret S \
//        --redirect-uri URI [--redirect-uri URI2 ...] [--require-consent]
//
// * Listens on 127.0.0.1:P only; the issuer is exactly `http://127.0.0.1:P` (no trailing slash).
// * One static confidential client: token_endpoint_auth_method client_secret_basic (oidc-provider
//   also accepts the secret in the body, i.e. client_secret_post, for such a client), grant
//   authorization_code, response_type code, PKCE required and S256 only, redirect URIs must
//   match exactly.
// * devInteractions: the login form's `login` value becomes the subject (`sub`); any password.
//   Consent is granted automatically (the grant is established just in time) unless
//   --require-consent is given, in which case the devInteractions consent form (a POST with the
//   hidden input prompt=consent) must be submitted.
// * Claims for scopes openid/profile/email are put into the ID token as well as userinfo.
// * Prints exactly one line `ready` on stdout once listening; everything else goes to stderr.
//   Exits on SIGTERM / SIGINT.

import { createRequire } from 'node:module';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

// Keep stdout for the single `ready` line: oidc-provider prints notices via console.info/log.
for (const name of ['log', 'info', 'debug']) {
  console[name] = (...args) => console.error(...args);
}

function usage(msg) {
  process.stderr.write(`oidc_provider.mjs: ${msg}\n`
    + 'usage: node oidc_provider.mjs --port P --client-id ID --client-secret S '
    + '--redirect-uri URI [--redirect-uri URI ...] [--require-consent]\n');
  process.exit(2);
}

const opts = { redirectUris: [], requireConsent: false };
{
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) usage(`${arg} needs a value`);
      i += 1;
      return argv[i];
    };
    switch (arg) {
      case '--port': opts.port = Number.parseInt(value(), 10); break;
      case '--client-id': opts.clientId = value(); break;
      case '--client-secret': opts.clientSecret = value(); break;
      case '--redirect-uri': opts.redirectUris.push(value()); break;
      case '--require-consent': opts.requireConsent = true; break;
      default: usage(`unknown argument ${arg}`);
    }
  }
  if (!Number.isInteger(opts.port) || opts.port <= 0 || opts.port > 65535) usage('--port is required');
  if (!opts.clientId) usage('--client-id is required');
  if (!opts.clientSecret) usage('--client-secret is required');
  if (opts.redirectUris.length === 0) usage('--redirect-uri is required');
}

// Resolve oidc-provider from tests/clients/js/node_modules whatever the cwd is.
const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, '..', 'clients', 'js', 'package.json'));
const { default: Provider } = await import(require.resolve('oidc-provider'));

const issuer = `http://127.0.0.1:${opts.port}`;

// A fresh signing key per run (no built-in development keys, no warning about them).
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingJwk = { ...privateKey.export({ format: 'jwk' }), kid: 'test-rs256', alg: 'RS256', use: 'sig' };

function displayName(login) {
  if (!login) return ' Test';
  const first = String.fromCodePoint(login.codePointAt(0));
  return `${first.toUpperCase()}${login.slice(first.length)} Test`;
}

const configuration = {
  clients: [{
    client_id: opts.clientId,
    client_secret: opts.clientSecret,
    redirect_uris: opts.redirectUris,
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: 'RS256',
  }],
  jwks: { keys: [signingJwk] },
  cookies: {
    keys: [randomBytes(32).toString('hex')],
    long: { httpOnly: true, sameSite: 'lax', secure: false, signed: true },
    short: { httpOnly: true, sameSite: 'lax', secure: false, signed: true },
  },
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email', 'email_verified'],
  },
  scopes: ['openid', 'profile', 'email'],
  // Put scope-requested claims into the ID token too (default: only userinfo for `code`).
  conformIdTokenClaims: false,
  pkce: {
    methods: ['S256'],
    required: () => true,
  },
  responseTypes: ['code'],
  features: {
    devInteractions: { enabled: true },
    userinfo: { enabled: true },
    introspection: { enabled: false },
    revocation: { enabled: false },
    rpInitiatedLogout: { enabled: false },
  },
  async findAccount(ctx, sub) {
    return {
      accountId: sub,
      async claims() {
        return {
          sub,
          preferred_username: sub,
          name: displayName(sub),
          email: `${sub}@example.org`,
          email_verified: true,
        };
      },
    };
  },
  async loadExistingGrant(ctx) {
    const { oidc } = ctx;
    const grantId = oidc.result?.consent?.grantId || oidc.session.grantIdFor(oidc.client.clientId);
    let grant = grantId ? await oidc.provider.Grant.find(grantId) : undefined;
    if (opts.requireConsent) return grant;
    // Auto-consent: establish (or extend) the grant just in time with what is being asked for.
    if (!grant) {
      grant = new oidc.provider.Grant({ accountId: oidc.session.accountId, clientId: oidc.client.clientId });
    }
    const scopes = [...oidc.requestParamOIDCScopes];
    if (scopes.length) grant.addOIDCScope(scopes.join(' '));
    const claims = [...oidc.requestParamClaims];
    if (claims.length) grant.addOIDCClaims(claims);
    await grant.save();
    return grant;
  },
  ttl: {
    AccessToken: 600,
    AuthorizationCode: 120,
    IdToken: 600,
    Interaction: 600,
    Session: 3600,
    Grant: 3600,
  },
  async renderError(ctx, out) {
    ctx.type = 'json';
    ctx.body = out;
  },
};

const provider = new Provider(issuer, configuration);
provider.proxy = false;
provider.on('server_error', (ctx, err) => console.error('oidc-provider server_error:', err));

const server = provider.listen(opts.port, '127.0.0.1');
server.on('listening', () => {
  process.stdout.write('ready\n');
});
server.on('error', (err) => {
  console.error(`oidc_provider.mjs: cannot listen on 127.0.0.1:${opts.port}: ${err.message}`);
  process.exit(1);
});

function shutdown() {
  server.close(() => process.exit(0));
  server.closeAllConnections?.();
  setTimeout(() => process.exit(0), 1000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
