"""The OpenAPI security scheme of `BearerTokenAuthentication` (access/drf.py) for drf-spectacular.

Imported by AccessConfig.ready(), which registers it; only documentation.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "access.drf.BearerTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "an API token (`manage.py createtoken USER`, or the admin): `Authorization: Bearer <token>` "
            "(`Authorization: Token <token>`, DRF's scheme, works too)",
        }
