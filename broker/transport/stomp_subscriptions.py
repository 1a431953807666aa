"""A STOMP connection's subscriptions, and which deliveries an ACK or NACK settles.

Under `ack: client` an ACK settles its delivery and every earlier unsettled one of
the same subscription (STOMP's cumulative ack), not every earlier one of the
connection as a JSON `multiple` ack does: so each such subscription keeps its
unsettled delivery tags, oldest first. `client-individual` and `auto` keep none.
Pure bookkeeping: no router, no I/O.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass(slots=True)
class Subscription:
    id: str
    subscription_json: str  # the id as deliveries name it (its JSON)
    cumulative: bool  # ack mode `client`
    manual: bool  # ack mode `client` or `client-individual`: its deliveries wait for an ACK or NACK
    tags: deque[int] = field(default_factory=deque)  # unsettled deliveries (cumulative only)


class Subscriptions:
    def __init__(self) -> None:
        self._by_id: dict[str, Subscription] = {}
        self._by_json: dict[str, Subscription] = {}
        self._owners: dict[int, Subscription] = {}  # a cumulative subscription's unsettled tags
        # Deliveries the client may still ACK or NACK (of a subscription not `auto`, or of one
        # gone when it came): what a COMMIT checks its held ACKs and NACKs against.
        self._unsettled: set[int] = set()

    def __contains__(self, subscription_id: str) -> bool:
        return subscription_id in self._by_id

    def __len__(self) -> int:
        return len(self._by_id)

    def add(self, subscription_id: str, subscription_json: str, *, cumulative: bool, manual: bool) -> Subscription:
        subscription = Subscription(subscription_id, subscription_json, cumulative, manual)
        self._by_id[subscription_id] = subscription
        self._by_json[subscription_json] = subscription
        return subscription

    def remove(self, subscription_id: str) -> None:
        subscription = self._by_id.pop(subscription_id, None)
        if subscription is not None:
            self._by_json.pop(subscription.subscription_json, None)
            for tag in subscription.tags:
                self._owners.pop(tag, None)

    def get(self, subscription_id: str) -> Subscription | None:
        return self._by_id.get(subscription_id)

    def by_json(self, subscription_json: str) -> Subscription | None:
        return self._by_json.get(subscription_json)

    def delivered(self, subscription: Subscription | None, tag: int) -> None:
        """A delivery of `subscription` went out under `tag`."""
        if subscription is None or subscription.manual:
            self._unsettled.add(tag)
        if subscription is not None and subscription.cumulative:
            subscription.tags.append(tag)
            self._owners[tag] = subscription

    def to_settle(self, tag: int) -> list[int]:
        """The tags an ACK or NACK of `tag` settles: with it, every earlier unsettled one of
        a `client` subscription; otherwise `tag` alone (the router judges whether it is known)."""
        owner = self._owners.get(tag)
        unsettled = self._unsettled
        if owner is None:
            unsettled.discard(tag)
            return [tag]
        pending, owners, settled = owner.tags, self._owners, []
        while pending and pending[0] <= tag:
            earlier = pending.popleft()
            owners.pop(earlier, None)
            unsettled.discard(earlier)
            settled.append(earlier)
        return settled

    def first_unknown(self, tags: list[int]) -> int | None:
        """The first of `tags` (ACKs and NACKs in order, not carried out yet) that names no
        delivery the client may still settle, one an earlier of them settles included; None
        when each names one. Nothing changes."""
        unsettled, owners = self._unsettled, self._owners
        settled: set[int] = set()
        for tag in tags:
            if tag not in unsettled or tag in settled:
                return tag
            owner = owners.get(tag)
            if owner is None:
                settled.add(tag)
            else:
                settled.update(earlier for earlier in owner.tags if earlier <= tag)
        return None
