"""App configuration of `storage`: it has no models; it connects the topology signals."""

from __future__ import annotations

from django.apps import AppConfig


class StorageConfig(AppConfig):
    name = "storage"
    verbose_name = "Storage"

    def ready(self) -> None:
        from storage import signals  # noqa: F401  (connects the receivers)
