"""The search behaviour of tests/server/test_search.py, on the MongoDB adapter."""

from tests.server.test_search import *  # noqa: F403 -- the same tests, with this folder's store fixtures
