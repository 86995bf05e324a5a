// fhir.js against CareLoop: a search sorted with fhir.js's $sort, which it sends in the DSTU2 form
// `_sort:desc=birthdate` / `_sort:asc=birthdate`, with a bearer token.
// Run by tests/clients/test_fhirjs.py with one JSON argument; prints one JSON line.
// https://github.com/FHIR/fhir.js
import fhir from 'fhir.js';

const { fhirBase, token, family } = JSON.parse(process.argv[2]);

try {
  const client = fhir({ baseUrl: fhirBase, auth: { bearer: token } });
  const births = async (direction) => {
    const answer = await client.search({ type: 'Patient', query: { family, $sort: [['birthdate', direction]] } });
    return (answer.data.entry || []).filter((e) => e.search.mode === 'match').map((e) => e.resource.birthDate);
  };
  console.log(JSON.stringify({ ok: true, desc: await births('desc'), asc: await births('asc') }));
} catch (error) {
  console.log(JSON.stringify({ ok: false, error: String(error && (error.message || error.status || error)),
                               data: error && error.data }));
  process.exitCode = 1;
}
