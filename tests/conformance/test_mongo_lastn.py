"""Observation/$lastn of tests/server/test_lastn.py, on the MongoDB adapter (an aggregation)."""

from tests.server.test_lastn import *  # noqa: F403 -- the same tests, with this folder's store fixtures
