// fhir-kit-client against CareLoop: SMART metadata lookup, a client_credentials token from the advertised token
// endpoint, then create, read, search and update with that bearer token.
// Run by tests/auth/test_node_clients.py with one JSON argument; prints one JSON line.
// https://github.com/Vermonster/fhir-kit-client
import { Client } from 'fhir-kit-client';

const { fhirBase, clientId, clientSecret, scope, family } = JSON.parse(process.argv[2]);

try {
  const client = new Client({ baseUrl: fhirBase });
  const auth = await client.smartAuthMetadata();
  const capability = await client.capabilityStatement();
  // fhir-kit-client does not run OAuth itself: the app gets the token and hands it over
  const response = await fetch(auth.tokenUrl, {
    method: 'POST',
    headers: {
      'content-type': 'application/x-www-form-urlencoded',
      authorization: `Basic ${Buffer.from(`${clientId}:${clientSecret}`).toString('base64')}`,
    },
    body: new URLSearchParams({ grant_type: 'client_credentials', scope }),
  });
  const token = await response.json();
  if (!response.ok) throw new Error(`token endpoint answered ${response.status}: ${JSON.stringify(token)}`);
  client.bearerToken = token.access_token;

  const created = await client.create({
    resourceType: 'Patient', body: { resourceType: 'Patient', name: [{ family, given: ['Kit'] }], gender: 'male' },
  });
  const read = await client.read({ resourceType: 'Patient', id: created.id });
  const search = await client.search({ resourceType: 'Patient', searchParams: { family } });
  const updated = await client.update({
    resourceType: 'Patient', id: created.id, body: { ...read, gender: 'other', birthDate: '1975-05-06' },
  });
  const reread = await client.read({ resourceType: 'Patient', id: created.id });
  const observation = await client.create({
    resourceType: 'Observation',
    body: {
      resourceType: 'Observation', status: 'final', code: { text: 'heart rate' },
      subject: { reference: `Patient/${created.id}` },
      valueQuantity: { value: 61, unit: '/min', system: 'http://unitsofmeasure.org', code: '/min' },
    },
  });
  const observations = await client.search({
    resourceType: 'Observation', searchParams: { subject: `Patient/${created.id}` },
  });
  console.log(JSON.stringify({
    ok: true,
    auth: { tokenUrl: auth.tokenUrl, authorizeUrl: auth.authorizeUrl },
    capability: { fhirVersion: capability.fhirVersion, service: capability.rest?.[0]?.security?.service },
    tokenScope: token.scope,
    created: { id: created.id, versionId: created.meta?.versionId },
    read: { id: read.id, family: read.name?.[0]?.family },
    search: { type: search.type, ids: (search.entry ?? []).map((e) => e.resource.id) },
    updated: { versionId: updated.meta?.versionId, gender: updated.gender },
    reread: { versionId: reread.meta?.versionId, gender: reread.gender, birthDate: reread.birthDate },
    observation: { id: observation.id },
    observationIds: (observations.entry ?? []).map((e) => e.resource.id),
  }));
} catch (error) {
  console.log(JSON.stringify({ ok: false, error: String(error?.message ?? error), response: error?.response?.data }));
  process.exitCode = 1;
}
