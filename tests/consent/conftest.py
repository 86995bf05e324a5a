"""Consent tests use the authorization tests' world: SMART on, real signed tokens, stored patients."""

from tests.auth.conftest import world  # noqa: F401 -- the fixture, shared
