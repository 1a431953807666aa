"""The Django project of the pub/sub broker: settings, URLs, ASGI entry point."""
