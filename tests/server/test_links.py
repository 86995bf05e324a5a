"""Bundle links carry the query as `urlencode` writes it, and the app's per-request telemetry question.

https://hl7.org/fhir/R4B/search.html#conformance
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

import httpx
import pytest

from server.app import telemetry_config
from server.querystring import encode_query
from tests.conftest import create
from tests.factories import patient

pytestmark = pytest.mark.anyio

PAIRS = [
    [],
    [("name", "smith")],
    [("_count", "10"), ("_sort", "-date"), ("code", "http://loinc.org|2339-0")],
    [("name", "van der berg"), ("given", "Zoë"), ("x", "a+b&c=d%e"), ("", ""), ("empty", "")],
    [("subject:Patient.name", "Ann"), ("_has:Observation:patient:code", "1234-5"),
     ("date", "ge2020-01-01T00:00:00+01:00")],
    [("q", "~._-"), ("q", "日本"), ("_cursor", "123")],
]


@pytest.mark.parametrize("pairs", PAIRS)
def test_a_query_is_encoded_exactly_as_urlencode_does(pairs: list[tuple[str, str]]) -> None:
    assert encode_query(pairs) == urlencode(pairs)
    assert parse_qsl(encode_query(pairs), keep_blank_values=True) == pairs


async def test_search_links_round_trip_the_query(client: httpx.AsyncClient) -> None:
    await create(client, patient(family="van der Berg"))
    answer = await client.get("/fhir/Patient", params=[("family", "van der Berg"), ("_count", "1"), ("given", "Zoë&x")])
    assert answer.status_code == 200
    links = {link["relation"]: link["url"] for link in answer.json()["link"]}
    query = links["self"].split("?", 1)[1]
    assert parse_qsl(query) == [("family", "van der Berg"), ("_count", "1"), ("given", "Zoë&x")]
    assert "family=van+der+Berg" in query and "given=Zo%C3%AB%26x" in query


def test_telemetry_is_asked_for_only_where_a_provider_can_be_configured() -> None:
    assert telemetry_config({}) == {"tracing": False, "metrics": False, "logs": False}
    assert telemetry_config({"OTEL_PYTHON_TRACER_PROVIDER": "sdk_tracer_provider"}) == {
        "tracing": True, "metrics": False, "logs": False}
    assert telemetry_config({"FASTAPI_OTEL_AUTO_CONFIGURE": "true"}) == {}  # FastAPI's defaults: all on
