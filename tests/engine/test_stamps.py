"""Message ids and publish times made in bulk (broker/runtime/stamps.py) are still
random version-4 UUIDs and ISO-8601 UTC times."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

from broker.runtime.stamps import new_message_id, now_iso


def test_message_ids_are_distinct_random_version_4_uuids_across_refills() -> None:
    ids = [new_message_id() for _ in range(3 * 256 + 7)]  # past several reads of random bytes
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
    # Every hex digit shows up in the random positions: no digit is fixed by mistake.
    assert {text[i] for text in ids for i in (0, 9, 15, 19, 35)} >= set("0123456789abcdef")
    assert {text[19] for text in ids} == set("89ab")


def test_publish_times_are_utc_iso_8601_with_microseconds() -> None:
    before = datetime.now(UTC)
    stamp = now_iso()
    after = datetime.now(UTC)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", stamp)
    parsed = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert before.replace(microsecond=0) <= parsed <= after
