// The SMART JS client (fhirclient) as a Node app against CareLoop: standalone launch with PKCE, then reading
// the patient's data and a refresh the library's way (a public client sends no client_id).
// Serves /launch and /callback on 127.0.0.1:<port>; the test plays the browser. Run by
// tests/auth/test_node_clients.py with one JSON argument; prints one JSON line per event and answers /callback
// with the result. https://docs.smarthealthit.org/client-js/
import http from 'node:http';
import smart from 'fhirclient';

const { fhirBase, clientId, scope, port } = JSON.parse(process.argv[2]);
const redirectUri = `http://127.0.0.1:${port}/callback`;

// the app's session store (one user here); fhirclient keeps its state in it between requests
const session = new Map();
const storage = {
  async get(key) { return session.get(key); },
  async set(key, value) { session.set(key, value); return value; },
  async unset(key) { return session.delete(key); },
};

function claims(jwt) {
  return JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString());
}

async function afterLogin(client) {
  const first = { ...client.state.tokenResponse };
  const patient = await client.patient.read();
  const observations = await client.patient.request('Observation', { flat: true });
  await client.refresh(); // the library's default: no client_id in the body
  const second = client.state.tokenResponse;
  const again = await client.request(`Patient/${client.patient.id}`);
  return {
    ok: true,
    patientId: client.patient.id,
    fhirUser: client.getFhirUser(),
    family: patient.name?.[0]?.family,
    observationIds: observations.map((o) => o.id),
    scope: first.scope,
    pkce: Boolean(client.state.codeVerifier),
    refreshSentClientId: Boolean(client.environment.options.refreshTokenWithClientId),
    refreshed: {
      newAccessToken: second.access_token !== first.access_token,
      newRefreshToken: Boolean(second.refresh_token) && second.refresh_token !== first.refresh_token,
      patient: claims(second.access_token).patient,
      readAfterRefresh: again.id,
    },
  };
}

const server = http.createServer(async (req, res) => {
  const path = new URL(req.url, redirectUri).pathname;
  try {
    if (path === '/launch') {
      await smart(req, res, storage).authorize({ iss: fhirBase, clientId, scope, redirectUri });
    } else if (path === '/callback') {
      const result = await afterLogin(await smart(req, res, storage).ready());
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(result));
      console.log(JSON.stringify(result));
      server.close();
    } else {
      res.writeHead(404);
      res.end();
    }
  } catch (error) {
    const result = { ok: false, error: String(error?.message ?? error), status: error?.status };
    res.writeHead(500, { 'content-type': 'application/json' });
    res.end(JSON.stringify(result));
    console.log(JSON.stringify(result));
    process.exitCode = 1;
    server.close();
  }
});
server.listen(port, '127.0.0.1', () => console.log(JSON.stringify({ listening: port })));
