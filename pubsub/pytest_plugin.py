"""pytest plugin of the test kit (pubsub/testing.py): the `published` fixture.

Registered as an entry point of the distribution (pyproject.toml, `pytest11`), so
a project that installs the broker has it in its tests without configuration.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .recording import Published
from .testing import capture_published


@pytest.fixture
def published() -> Iterator[list[Published]]:
    """What the test's code published, in order (pubsub.testing.capture_published)."""
    with capture_published() as messages:
        yield messages
