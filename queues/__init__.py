"""Queues: the Queue and stored Message models, admin, API; the message store (ORM side)."""
