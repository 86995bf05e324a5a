"""The Task deadline worklist tests of tests/server/test_task_deadline.py, on the MongoDB adapter."""

from tests.server.test_task_deadline import *  # noqa: F403 -- the same tests, this folder's store
