"""Every R4B example found by its own search-parameter values (tests/resources/search/), on MongoDB."""

from tests.resources.search.test_examples_searchable import *  # noqa: F403 -- the same test, this folder's store
