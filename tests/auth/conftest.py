"""Fixtures for authorization tests: an app with SMART on (real keys, real signed JWTs), clients and users."""

from __future__ import annotations

import base64
import hashlib
import secrets
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from fastapi import FastAPI

from server.app import create_app
from server.auth.service import AuthService
from server.settings import Settings

BASE = "http://localhost:8080"
FHIR = f"{BASE}/fhir"
REDIRECT = "http://localhost:9999/callback"
FHIR_JSON = {"content-type": "application/fhir+json"}


@dataclass
class World:
    """The app, its auth service, an admin token and a few stored resources."""

    app: FastAPI
    client: httpx.AsyncClient
    auth: AuthService
    admin: dict[str, str]
    ids: dict[str, str]

    def bearer(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    async def backend_token(self, scope: str) -> str:
        """A client_credentials token of a fresh symmetric client allowed exactly `scope`."""
        record, secret = self.auth.add_client("backend", "confidential-symmetric", scope, [])
        assert secret is not None
        response = await self.client.post("/auth/token", data={"grant_type": "client_credentials", "scope": scope},
                                          auth=(record.client_id, secret))
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token

    def app_client(self, scope: str, kind: str = "public") -> tuple[str, str | None]:
        """A browser app client registered with the test redirect URI."""
        record, secret = self.auth.add_client("app", kind, scope, [REDIRECT])
        return record.client_id, secret

    async def authorize(self, client_id: str, scope: str, username: str, password: str = "secret",
                        extra: dict[str, str] | None = None, patient: str | None = None,
                        secret: str | None = None) -> dict[str, Any]:
        """The whole authorization-code flow with PKCE: authorize, sign in, (pick), code, token."""
        code, verifier = await self.code(client_id, scope, username, password, extra, patient)
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
                "code_verifier": verifier}
        if secret is None:
            form["client_id"] = client_id
        response = await self.client.post("/auth/token", data=form,
                                          auth=(client_id, secret) if secret else None)
        assert response.status_code == 200, response.text
        assert response.headers["cache-control"] == "no-store" and response.headers["pragma"] == "no-cache"
        found: dict[str, Any] = response.json()
        return found

    async def code(self, client_id: str, scope: str, username: str, password: str = "secret",
                   extra: dict[str, str] | None = None, patient: str | None = None) -> tuple[str, str]:
        """An authorization code and its PKCE verifier."""
        verifier = secrets.token_urlsafe(48)
        params = {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT, "scope": scope,
                  "state": secrets.token_urlsafe(16), "aud": FHIR, "code_challenge": challenge(verifier),
                  "code_challenge_method": "S256", **(extra or {})}
        page = await self.client.get("/auth/authorize", params=params)
        assert page.status_code == 200 and "Sign in" in page.text, page.text
        response = await self.client.post("/auth/authorize", data={**params, "username": username,
                                                                   "password": password})
        if response.status_code == 200 and "Choose a patient" in response.text:
            session = response.text.split("name='session' value='")[1].split("'")[0]
            response = await self.client.post("/auth/authorize", data={**params, "session": session,
                                                                       "patient": patient or ""})
        assert response.status_code == 302, response.text
        location = urlparse(response.headers["location"])
        assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
        query = parse_qs(location.query)
        assert query["state"] == [params["state"]]
        return query["code"][0], verifier


def challenge(verifier: str) -> str:
    """The S256 code challenge of a verifier."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


@asynccontextmanager
async def build_world(app: FastAPI) -> AsyncIterator[World]:
    """An app with SMART on, an admin token, stored patients and their data, and three users."""
    async with app.router.lifespan_context(app):
        auth: AuthService = app.state.services.auth
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            record, secret = auth.add_client("admin", "confidential-symmetric", "system/*.cruds", [], ehr=True)
            response = await client.post("/auth/token", data={"grant_type": "client_credentials",
                                                              "scope": "system/*.cruds"},
                                         auth=(record.client_id, secret or ""))
            admin = {"Authorization": f"Bearer {response.json()['access_token']}", **FHIR_JSON}
            ids = await _populate(client, admin)
            auth.store.add_user("alice", "secret", f"Patient/{ids['alice']}", "Alice A")
            auth.store.add_user("bob", "secret", f"Patient/{ids['bob']}", "Bob B")
            auth.store.add_user("drsmith", "secret", f"Practitioner/{ids['practitioner']}", "Dr Smith")
            yield World(app, client, auth, admin, ids)


@asynccontextmanager
async def open_world(tmp_path: Path, seeded_database: Path, **settings: Any) -> AsyncIterator[World]:
    """A world on a copy of the seeded store, with settings changed from the test defaults."""
    shutil.copyfile(seeded_database, tmp_path / "fhir.db")
    # the URL the tests call the server by is its configured base: issuer and audience come from it (issue 27)
    found = Settings(**{"sqlite_path": str(tmp_path / "fhir.db"), "validation_workers": 0, "base_url": FHIR,
                        **settings})
    async with build_world(create_app(found)) as world:
        yield world


@pytest.fixture
async def world(tmp_path: Path, seeded_database: Path) -> AsyncIterator[World]:
    async with open_world(tmp_path, seeded_database) as found:
        yield found


async def _create(client: httpx.AsyncClient, headers: dict[str, str], resource: dict[str, Any]) -> str:
    response = await client.post(f"/fhir/{resource['resourceType']}", json=resource, headers=headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _obs(patient: str, category: str, code: str, value: float, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": category}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": f"Patient/{patient}"}, **extra,
            "valueQuantity": {"value": value, "unit": "/min", "system": "http://unitsofmeasure.org",
                              "code": "/min"}}


async def _populate(client: httpx.AsyncClient, admin: dict[str, str]) -> dict[str, str]:
    ids: dict[str, str] = {}
    ids["alice"] = await _create(client, admin, {"resourceType": "Patient", "name": [{"family": "Alpha",
                                                 "given": ["Alice"]}], "identifier": [{"system": "urn:mrn",
                                                                                       "value": "A-1"}]})
    ids["bob"] = await _create(client, admin, {"resourceType": "Patient", "name": [{"family": "Beta",
                                               "given": ["Bob"]}], "identifier": [{"system": "urn:mrn",
                                                                                   "value": "B-2"}]})
    ids["practitioner"] = await _create(client, admin, {"resourceType": "Practitioner", "name": [{"family": "Smith"}]})
    ids["alice_enc"] = await _create(client, admin, {"resourceType": "Encounter", "status": "finished",
                                                     "class": {"code": "AMB"},
                                                     "subject": {"reference": f"Patient/{ids['alice']}"}})
    ids["alice_vital"] = await _create(client, admin, _obs(ids["alice"], "vital-signs", "8867-4", 72, encounter={
        "reference": f"Encounter/{ids['alice_enc']}"}))
    ids["alice_lab"] = await _create(client, admin, {**_obs(ids["alice"], "laboratory", "8867-4", 80)})
    ids["bob_vital"] = await _create(client, admin, _obs(ids["bob"], "vital-signs", "8867-4", 90, focus=[
        {"reference": f"Patient/{ids['alice']}"}]))
    ids["bob_condition"] = await _create(client, admin, {"resourceType": "Condition", "subject": {
        "reference": f"Patient/{ids['bob']}"}, "code": {"text": "asthma"}})
    return ids
