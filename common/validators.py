"""Django field validators shared by the apps' models.

The engine has its own pure name check (broker/engine/names.py); this
is the same rule as a Django validator, so the admin and model forms refuse a
bad name before it reaches a service (docs/protocol.md: names are 1 to 255
characters of `A-Z a-z 0-9 _ . : -`).
"""

from __future__ import annotations

from django.core.validators import RegexValidator

broker_name_validator = RegexValidator(
    regex=r"^[A-Za-z0-9_.:\-]{1,255}\Z",
    message="Names are 1 to 255 characters of A-Z a-z 0-9 _ . : -",
    code="invalid",
)
