"""Maintenance scripts run by hand (data builders)."""
