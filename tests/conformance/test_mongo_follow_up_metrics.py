"""The $follow-up-metrics tests of tests/server/test_follow_up_metrics.py, on the MongoDB adapter: the same
hand-built month gives the same figures from its aggregation pipelines."""

from tests.server.test_follow_up_metrics import *  # noqa: F403 -- the same tests, this folder's store
