"""Consent enforcement (tests/consent/test_enforcement.py) on the MongoDB adapter: the consent narrowing
compiles into MongoDB filters too."""

from tests.consent.test_enforcement import *  # noqa: F403 -- the same tests, with this folder's store
