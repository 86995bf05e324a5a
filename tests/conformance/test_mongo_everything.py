"""Patient/$everything of tests/server/test_everything.py, on the MongoDB adapter."""

from tests.server.test_everything import *  # noqa: F403 -- the same tests, with this folder's store fixtures
