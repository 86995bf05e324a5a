"""The custom SearchParameter and reindex behaviour of tests/server/test_custom_search_parameters.py, on the
MongoDB adapter (the test that restarts the server keeps its own SQLite file)."""

from tests.server.test_custom_search_parameters import *  # noqa: F403 -- the same tests, this folder's store
