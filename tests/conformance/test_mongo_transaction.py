"""The transaction behaviour of tests/server/test_transaction.py, on the MongoDB adapter."""

from tests.server.test_transaction import *  # noqa: F403 -- the same tests, with this folder's store fixtures
