"""The MongoDB store adapter."""
