"""The search chains behaviour of tests/server/test_search_chains.py, on the MongoDB adapter."""

from tests.server.test_search_chains import *  # noqa: F403 -- the same tests, with this folder's store fixtures
