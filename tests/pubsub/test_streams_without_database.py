"""The admin's change streams are read at a request's start: never a failure of a request
that may not reach the database (a test of a project that installs the broker, without
database access)."""

from __future__ import annotations

from django.test import Client

from pubsub.streams import forget_admin_streams


def test_a_request_without_database_access_is_served_when_the_streams_are_due() -> None:
    forget_admin_streams()  # due to be read: the request's start tries, fails and goes on
    try:
        response = Client().get("/ping")
        assert response.status_code == 200
    finally:
        forget_admin_streams()
