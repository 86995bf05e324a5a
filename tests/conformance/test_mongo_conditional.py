"""The conditional behaviour of tests/server/test_conditional.py, on the MongoDB adapter."""

from tests.server.test_conditional import *  # noqa: F403 -- the same tests, with this folder's store fixtures
