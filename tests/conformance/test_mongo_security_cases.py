"""SECURITY.md cases 23 to 51 (tests/auth/test_security_cases.py) on the MongoDB adapter: the patient
compartment and granular scopes compile into MongoDB filters too."""

from tests.auth.test_security_cases import *  # noqa: F403 -- the same tests, with this folder's store
