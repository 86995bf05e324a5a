// MedplumClient (@medplum/core) against CareLoop: client-credentials login, then create, read and search a Patient.
// Run by tests/auth/test_node_clients.py with one JSON argument; prints one JSON line.
// https://www.medplum.com/docs/sdk/core.medplumclient
import { MedplumClient } from '@medplum/core';

const { base, clientId, clientSecret, family } = JSON.parse(process.argv[2]);

function claims(jwt) {
  return JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString());
}

try {
  // the defaults are Medplum's own paths (fhir/R4, oauth2/token): point them at CareLoop's
  const medplum = new MedplumClient({ baseUrl: base, fhirUrlPath: 'fhir', tokenUrl: 'auth/token' });
  await medplum.startClientLogin(clientId, clientSecret); // client_secret_post, no scope
  const token = claims(medplum.getAccessToken());
  const created = await medplum.createResource({
    resourceType: 'Patient', name: [{ family, given: ['Medplum'] }], gender: 'female', birthDate: '1980-02-03',
  });
  const read = await medplum.readResource('Patient', created.id);
  const found = await medplum.searchResources('Patient', { family });
  console.log(JSON.stringify({
    ok: true,
    scope: token.scope,
    clientId: token.client_id,
    created: { id: created.id, versionId: created.meta?.versionId },
    read: { id: read.id, family: read.name?.[0]?.family, birthDate: read.birthDate },
    searchIds: found.map((p) => p.id),
    searchBundleType: found.bundle?.type,
  }));
} catch (error) {
  console.log(JSON.stringify({ ok: false, error: String(error?.message ?? error), outcome: error?.outcome }));
  process.exitCode = 1;
}
