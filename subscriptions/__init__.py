"""Subscriptions: WebSocket consumers and the runbroker command; no models."""
