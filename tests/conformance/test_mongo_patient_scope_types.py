"""Issue 27 items 2, 3 and 8 (tests/auth/test_patient_scope_types.py) on the MongoDB adapter: the extended
compartment, the Subscription owner and the narrowed hops compile into MongoDB filters too."""

from tests.auth.test_patient_scope_types import *  # noqa: F403 -- the same tests, with this folder's store
