// A real, certified OpenID provider (panva's `oidc-provider`) for the OIDC tests, on
// 127.0.0.1. Configuration comes from the environment:
//   OIDC_CLIENTS  JSON array of client registrations (client_id, client_secret or
//                 token_endpoint_auth_method "none", redirect_uris)
// Accounts: any email typed into the login form is an account; its `email_verified` claim is
// false when the address starts with "unverified". The login form stands in for a real
// identity provider's login page: the test posts an email to it, as a person would.
// Prints `listening <port>` once it accepts connections.
import http from 'node:http';
import { pathToFileURL } from 'node:url';

// OIDC_PROVIDER_MODULE: the package's entry file (script/setup installs it under .tools/oidc).
const { default: Provider } = await import(pathToFileURL(process.env.OIDC_PROVIDER_MODULE).href);

const clients = JSON.parse(process.env.OIDC_CLIENTS || '[]');

const server = http.createServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const port = server.address().port;
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients,
  pkce: { required: () => true },
  features: { devInteractions: { enabled: false } },
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
  cookies: { keys: ['cake-test-cookie-key-0123456789'] },
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() {
        return { sub: id, email: id, email_verified: !id.startsWith('unverified'), name: `Name of ${id}` };
      },
    };
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
});
provider.on('server_error', (ctx, err) => console.error('server_error', err));

async function readForm(req) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 10000) throw new Error('body too large');
  }
  return Object.fromEntries(new URLSearchParams(body));
}

const callback = provider.callback();
server.on('request', async (req, res) => {
  try {
    const m = req.url.match(/^\/interaction\/([^/?]+)(\/login)?/);
    if (!m) return callback(req, res);
    const details = await provider.interactionDetails(req, res);
    if (req.method === 'GET' && !m[2]) {
      res.setHeader('content-type', 'text/html');
      return res.end(`<form method="post" action="/interaction/${details.uid}/login"><input name="email"><button>Sign in</button></form>`);
    }
    if (req.method === 'POST' && m[2]) {
      const { email } = await readForm(req);
      const grant = new provider.Grant({ accountId: email, clientId: details.params.client_id });
      grant.addOIDCScope(details.params.scope);
      const grantId = await grant.save();
      return provider.interactionFinished(req, res, { login: { accountId: email }, consent: { grantId } }, { mergeWithLastSubmission: false });
    }
    res.statusCode = 405;
    res.end();
  } catch (err) {
    console.error(err);
    res.statusCode = 500;
    res.end(String(err));
  }
});

console.log(`listening ${port}`);
