// A real OpenID provider for the end-to-end tests: oidc-provider issuing JWT access
// tokens through the client_credentials grant, and to people through the device
// authorization grant (RFC 8628) or the authorization code grant on a loopback redirect
// for the public client `tollgate-cli`, with refresh
// tokens; people sign in through oidc-provider's own development login and consent pages
// (any password), which tests complete over HTTP. Each resource indicator picks the
// signing algorithm (or a one- or five-second lifetime), so one provider serves ES256, RS256 and
// EdDSA tokens.
//
//   node idp.mjs PORT CLIENTS_JSON [GATEWAY_URL]
//
// With GATEWAY_URL, browsers sign in to the gateway through the confidential web client
// `tollgate-web` (secret `tollgate-web-secret`): authorization code with PKCE, its redirect
// URI GATEWAY_URL/-/tollgate/callback, RP-initiated logout back to GATEWAY_URL/. Its ID
// tokens carry the person's groups (scope `groups`).
//
// CLIENTS_JSON: {"alice": {"secret": "...", "groups": ["developers"]}, ...}; the client id
// becomes the token's `sub`, and a client's optional "claims" object is added to its tokens
// (CI-job-shaped callers). A person signing in as `alice` gets alice's groups. Prints "ready" on stdout once listening.
import { generateKeyPairSync } from 'node:crypto';
import Provider from 'oidc-provider';

const [port, clientsJson, gateway] = process.argv.slice(2);
const clients = JSON.parse(clientsJson);

function jwk(type, options, kid, alg) {
  const { privateKey } = generateKeyPairSync(type, options);
  return { ...privateKey.export({ format: 'jwk' }), kid, alg, use: 'sig' };
}

const keys = [
  jwk('ec', { namedCurve: 'P-256' }, 'e2e-es256', 'ES256'),
  jwk('rsa', { modulusLength: 2048 }, 'e2e-rs256', 'RS256'),
  jwk('ed25519', {}, 'e2e-eddsa', 'EdDSA'),
];

// resource -> [signing algorithm, token lifetime in seconds]
const resources = {
  'urn:gogs:es256': ['ES256', 300],
  'urn:gogs:rs256': ['RS256', 300],
  'urn:gogs:eddsa': ['EdDSA', 300],
  'urn:gogs:short': ['ES256', 1],
  // Shorter than what `tollgate credential` keeps without refreshing (30 s), long enough
  // for one git command's requests on a busy machine (the e2e policy has no leeway).
  'urn:gogs:login': ['ES256', 5],
};

const provider = new Provider(`http://127.0.0.1:${port}`, {
  clients: [
    ...Object.entries(clients).map(([id, c]) => ({
      client_id: id,
      client_secret: c.secret,
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
    })),
    {
      // A native app: device flow, or a browser redirected to a loopback listener on any
      // port (RFC 8252), with PKCE.
      client_id: 'tollgate-cli',
      application_type: 'native',
      token_endpoint_auth_method: 'none',
      grant_types: ['urn:ietf:params:oauth:grant-type:device_code', 'authorization_code', 'refresh_token'],
      redirect_uris: ['http://127.0.0.1/callback'],
      response_types: ['code'],
    },
    ...(gateway ? [{
      client_id: 'tollgate-web',
      client_secret: 'tollgate-web-secret',
      grant_types: ['authorization_code'],
      response_types: ['code'],
      redirect_uris: [`${gateway}/-/tollgate/callback`],
      post_logout_redirect_uris: [`${gateway}/`],
    }] : []),
  ],
  // A person's account: the login is the `sub`, with that client's groups.
  findAccount: (ctx, id) => ({
    accountId: id,
    claims: () => ({ sub: id, groups: (clients[id] || {}).groups || [] }),
  }),
  claims: { openid: ['sub'], groups: ['groups'] },
  // Scope-granted claims (groups) in the ID token itself, not only at userinfo.
  conformIdTokenClaims: false,
  jwks: { keys },
  features: {
    devInteractions: { enabled: true },
    deviceFlow: { enabled: true },
    clientCredentials: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => 'urn:gogs:es256',
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resource) => {
        const [alg, accessTokenTTL] = resources[resource] || [];
        if (!alg) throw new Error(`unknown resource ${resource}`);
        return { scope: '', audience: 'gogs', accessTokenTTL, accessTokenFormat: 'jwt', jwt: { sign: { alg } } };
      },
    },
  },
  extraTokenClaims: (ctx, token) => {
    const client = clients[token.accountId || token.clientId] || {};
    return { ...(client.claims || {}), groups: client.groups || [] };
  },
  // A refresh token for every grant the client may refresh, offline_access or not.
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  routes: { jwks: '/jwks' },
  ttl: { ClientCredentials: (ctx, token, client) => token.resourceServer?.accessTokenTTL || 300 },
});
provider.proxy = false;
const server = provider.listen(Number(port), '127.0.0.1', () => console.log('ready'));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
