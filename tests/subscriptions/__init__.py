"""Tests of the subscriptions package."""
