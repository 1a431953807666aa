"""`python -m pubsub_client`: the `pubsub` command."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
