"""Every operation refuses a parameter it does not declare, GET and POST alike (issue 30, item 7).

https://hl7.org/fhir/R4B/operations.html#request
"""

from __future__ import annotations

import httpx
import pytest

from operations.parameters import OperationInput
from operations.registry import GENERAL_PARAMETERS, OPERATIONS
from resources.errors import Invalid
from tests.conftest import FHIR_JSON, body, create
from tests.factories import patient

pytestmark = pytest.mark.anyio


def _parameters(*pairs: tuple[str, str]) -> dict[str, object]:
    return {"resourceType": "Parameters", "parameter": [{"name": k, "valueString": v} for k, v in pairs]}


def _refused(response: httpx.Response, *names: str) -> None:
    assert response.status_code == 400, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    issue = outcome["issue"][0]
    assert issue["code"] == "not-supported"
    assert issue["expression"] == list(names)
    for name in names:
        assert f"'{name}'" in issue["diagnostics"]


@pytest.mark.parametrize("name", ["groupBy", "made-up"])
async def test_tier_refuses_an_unknown_parameter_by_get_and_post(client: httpx.AsyncClient, name: str) -> None:
    _refused(await client.get("/fhir/Patient/$tier", params={name: "x"}), name)
    _refused(await client.post("/fhir/Patient/$tier", content=body(_parameters((name, "x"))), headers=FHIR_JSON),
             name)


async def test_churn_risk_instance_refuses_groupby(client: httpx.AsyncClient) -> None:
    someone = await create(client, patient())
    _refused(await client.get(f"/fhir/Patient/{someone['id']}/$churn-risk", params={"groupBy": "tier"}), "groupBy")


async def test_every_unknown_parameter_is_named(client: httpx.AsyncClient) -> None:
    response = await client.get("/fhir/ValueSet/$expand", params={"url": "http://hl7.org/fhir/ValueSet/"
                                                                  "administrative-gender", "zeta": "1", "alpha": "2"})
    _refused(response, "alpha", "zeta")


async def test_declared_and_general_parameters_pass(client: httpx.AsyncClient) -> None:
    url = "http://hl7.org/fhir/ValueSet/administrative-gender"
    response = await client.get("/fhir/ValueSet/$expand", params={"url": url, "count": "2", "_format": "json",
                                                                  "_pretty": "true", "_summary": "false",
                                                                  "_elements": "expansion"})
    assert response.status_code == 200, response.text
    posted = await client.post("/fhir/ValueSet/$expand", content=body(_parameters(("url", url))), headers=FHIR_JSON)
    assert posted.status_code == 200, posted.text
    assert (await client.get("/fhir/Patient/$tier")).status_code == 200


async def test_system_operation_refuses_unknown(client: httpx.AsyncClient) -> None:
    # $verify-audit takes nothing: the refusal comes before the handler runs
    _refused(await client.get("/fhir/$verify-audit", params={"persist": "true"}), "persist")


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: op.name)
def test_each_operation_refuses_a_made_up_parameter_and_keeps_its_own(operation: object) -> None:
    assert hasattr(operation, "refuse_unknown")
    if operation.parameters is None:  # type: ignore[attr-defined]
        pytest.skip("its handler checks its own parameters (tested over HTTP below)")
    with pytest.raises(Invalid) as refused:
        operation.refuse_unknown(OperationInput.from_query([("no-such-parameter", "1")]))  # type: ignore[attr-defined]
    assert refused.value.issues[0].expression == ("no-such-parameter",)
    declared = [(name, "1") for name in operation.parameters]  # type: ignore[attr-defined]
    operation.refuse_unknown(OperationInput.from_query(  # type: ignore[attr-defined]
        declared + [(name, "1") for name in sorted(GENERAL_PARAMETERS)]))


async def test_lastn_checks_its_own_parameters(client: httpx.AsyncClient) -> None:
    # $lastn takes any Observation search parameter, so its handler (not the declared list) refuses the rest
    _refused(await client.get("/fhir/Observation/$lastn", params={"max": "1", "groupBy": "code"}), "groupBy")
