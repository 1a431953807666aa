"""Bindings: the Binding model (exchange -> queue), admin and API."""
