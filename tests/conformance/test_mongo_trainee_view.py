"""The trainee's de-identified view (tests/consent/test_trainee_view.py) on the MongoDB adapter: the same
redaction and refusals whatever the store."""

from tests.consent.test_trainee_view import *  # noqa: F403 -- the same tests, with this folder's store

# these open their own SQLite world with other settings: the store has nothing to do with what they check
from tests.consent.test_trainee_view import (
    test_a_broken_profile_stops_the_server_at_start,
    test_a_configured_profile_replaces_the_shipped_one,
    test_subscription_events_and_the_subscription_itself_are_de_identified,
)

del test_a_broken_profile_stops_the_server_at_start
del test_a_configured_profile_replaces_the_shipped_one
del test_subscription_events_and_the_subscription_itself_are_de_identified
