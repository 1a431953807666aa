"""A STOMP connection's subscriptions, and which deliveries an ACK or NACK settles.

Each subscription whose deliveries wait for an ACK or NACK (`client`, `client-individual`)
keeps its unsettled delivery tags, oldest first: what a COMMIT checks its held ACKs and
NACKs against. Under `client` an ACK settles its delivery and every earlier unsettled one
of the same subscription (STOMP's cumulative ack), not every earlier one of the connection
as a JSON `multiple` ack does. A subscription's tags go when it ends, as the router
requeues its unacknowledged messages (at its UNSUBSCRIBE, or when the router cancels
it); `auto` keeps none. Pure bookkeeping: no router, no I/O.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass(slots=True, eq=False)
class Subscription:
    id: str
    subscription_json: str  # the id as deliveries name it (its JSON)
    cumulative: bool  # ack mode `client`
    manual: bool  # ack mode `client` or `client-individual`: its deliveries wait for an ACK or NACK
    tags: set[int] = field(default_factory=set)  # unsettled deliveries (manual only, until it ends)
    order: deque[int] = field(default_factory=deque)  # the same, oldest first (cumulative only)
    ending: bool = False  # unsubscribed: the router requeues what it has not settled


class Subscriptions:
    def __init__(self) -> None:
        self._by_id: dict[str, Subscription] = {}
        self._by_json: dict[str, Subscription] = {}
        # Every delivery the client may still ACK or NACK -> its subscription (manual, not
        # ending): the union of their `tags`.
        self._owners: dict[int, Subscription] = {}

    def __contains__(self, subscription_id: str) -> bool:
        return subscription_id in self._by_id

    def __len__(self) -> int:
        return len(self._by_id)

    def add(self, subscription_id: str, subscription_json: str, *, cumulative: bool, manual: bool) -> Subscription:
        subscription = Subscription(subscription_id, subscription_json, cumulative, manual)
        self._by_id[subscription_id] = subscription
        self._by_json[subscription_json] = subscription
        return subscription

    def ending(self, subscription_id: str) -> None:
        """Its UNSUBSCRIBE went to the router, which requeues its unacknowledged messages
        before any later ACK reaches it: none of its deliveries is the client's to settle
        any more, those still on their way included."""
        subscription = self._by_id.get(subscription_id)
        if subscription is not None:
            subscription.ending = True
            self._forget(subscription)

    def remove(self, subscription_id: str) -> None:
        """It has ended (unsubscribed, refused, or cancelled by the router): its deliveries
        are requeued."""
        subscription = self._by_id.pop(subscription_id, None)
        if subscription is not None:
            if self._by_json.get(subscription.subscription_json) is subscription:
                del self._by_json[subscription.subscription_json]
            subscription.ending = True
            self._forget(subscription)

    def _forget(self, subscription: Subscription) -> None:
        owners = self._owners
        for tag in subscription.tags:
            owners.pop(tag, None)
        subscription.tags.clear()
        subscription.order.clear()

    def get(self, subscription_id: str) -> Subscription | None:
        return self._by_id.get(subscription_id)

    def by_json(self, subscription_json: str) -> Subscription | None:
        return self._by_json.get(subscription_json)

    def delivered(self, subscription: Subscription | None, tag: int) -> None:
        """A delivery of `subscription` went out under `tag`. Kept only while the client may
        settle it: not under `auto`, nor for a subscription gone or ending (the router
        requeues it)."""
        if subscription is None or not subscription.manual or subscription.ending:
            return
        subscription.tags.add(tag)
        if subscription.cumulative:
            subscription.order.append(tag)
        self._owners[tag] = subscription

    def to_settle(self, tag: int) -> list[int]:
        """The tags an ACK or NACK of `tag` settles: with it, every earlier unsettled one of
        a `client` subscription; otherwise `tag` alone (the router judges whether it is known)."""
        owner = self._owners.pop(tag, None)
        if owner is None:
            return [tag]
        if not owner.cumulative:
            owner.tags.discard(tag)
            return [tag]
        pending, unsettled, owners, settled = owner.order, owner.tags, self._owners, []
        while pending and pending[0] <= tag:
            earlier = pending.popleft()
            unsettled.discard(earlier)
            owners.pop(earlier, None)
            settled.append(earlier)
        return settled

    def first_unknown(self, tags: list[int]) -> int | None:
        """The first of `tags` (ACKs and NACKs in order, not carried out yet) that names no
        delivery the client may still settle, one an earlier of them settles included; None
        when each names one. Nothing changes."""
        owners = self._owners
        settled: set[int] = set()
        settled_up_to: dict[Subscription, int] = {}  # a `client` subscription's: every tag to this one
        for tag in tags:
            owner = owners.get(tag)
            if owner is None or tag in settled or tag <= settled_up_to.get(owner, 0):
                return tag
            if owner.cumulative:
                settled_up_to[owner] = tag
            else:
                settled.add(tag)
        return None
