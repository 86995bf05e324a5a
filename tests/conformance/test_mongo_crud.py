"""The crud behaviour of tests/server/test_crud.py, on the MongoDB adapter."""

from tests.server.test_crud import *  # noqa: F403 -- the same tests, with this folder's store fixtures
