"""subscriptions package."""
