"""Every R4B example found by its own search-parameter values (tests/resources/search/), on MongoDB."""

import pytest

from server.settings import Settings
from tests.conformance.conftest import MONGODB_URL, mongo_settings
from tests.resources.search.test_examples_searchable import *  # noqa: F403 -- the same test, this folder's store


@pytest.fixture
def settings() -> Settings:
    # the test is about the clinical store's index; on the in-process stand-in, recording the audit trail of its
    # thousands of searches in mongomock too takes over ten minutes (issue 29): a real MongoDB keeps it on
    # and the escalation worker off, as on SQLite (the examples' open Tasks are long overdue)
    return mongo_settings(escalation=False, **({} if MONGODB_URL else {"audit": "off"}))[0]
