"""Exchanges: the Exchange model, its admin, API and services."""
