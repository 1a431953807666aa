"""RabbitMQ's queue and exchange features, each scenario run against ours and against the
real RabbitMQ with its argument names: what a RabbitMQ user's code relies on holds here."""

from __future__ import annotations

from tests.e2e.test_stomp_e2e import Client as StompClient
from tests.eventually import eventually

from .targets import Target


async def subscribe(client: StompClient, queue: str, subscription: str = "0", prefetch: int = 10) -> None:
    await client.send("SUBSCRIBE", {
        "id": subscription, "destination": f"/amq/queue/{queue}", "ack": "client-individual",
        "prefetch-count": str(prefetch), "receipt": f"sub-{subscription}",
    })
    receipt = await client.receive()
    assert receipt.command == "RECEIPT", receipt


async def silent(client: StompClient, seconds: float = 1.0) -> bool:
    try:
        frame = await client.receive(timeout=seconds)
    except TimeoutError:
        return True
    client.pending.insert(0, frame)
    return False


def fanout_to_queue(target: Target, exchange: str = "dlx", queue: str = "dead") -> tuple[str, str]:
    """A fanout exchange (a dead-letter or an alternate exchange) and the queue it feeds,
    their names made unique: (exchange, queue)."""
    exchange, queue = target.unique(exchange), target.unique(queue)
    target.declare_exchange(exchange, "fanout")
    target.declare_queue(queue)
    target.bind(exchange, queue)
    return exchange, queue


async def test_a_poison_message_is_dead_lettered_after_its_third_redelivery(target: Target) -> None:
    dlx, dead = fanout_to_queue(target)
    work = target.unique("work")
    target.declare_queue(work, {"x-queue-type": "quorum", "x-delivery-limit": 3, "x-dead-letter-exchange": dlx})
    assert target.publish("", work, "poison")
    client = await target.stomp()
    await subscribe(client, work, prefetch=1)
    redelivered: list[str] = []
    while not await silent(client, 1.5):
        message = await client.receive()
        redelivered.append(message.headers["redelivered"])
        await client.send("NACK", {"id": message.headers["ack"]})  # requeue: it comes back
    assert redelivered == ["false", "true", "true", "true"]
    await eventually(lambda: target.ready(dead) == 1, what="the poison message dead-lettered")
    (got,) = target.get(dead)
    assert (got.body, got.headers["x-first-death-reason"]) == ("poison", "delivery_limit")
    assert target.ready(work) == 0
    client.writer.close()


async def test_a_queue_dead_lettering_to_itself_drops_a_message_past_its_delivery_limit(target: Target) -> None:
    work = target.unique("work")
    target.declare_queue(work, {
        "x-queue-type": "quorum", "x-delivery-limit": 1, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": work,
    })
    assert target.publish("", work, "poison")
    client = await target.stomp()
    await subscribe(client, work, prefetch=1)
    redelivered: list[str] = []
    while len(redelivered) < 5 and not await silent(client, 1.5):  # 5: round and round
        message = await client.receive()
        redelivered.append(message.headers["redelivered"])
        await client.send("NACK", {"id": message.headers["ack"]})  # requeue: it comes back, once
    assert redelivered == ["false", "true"]  # then dead-lettered into a cycle with no rejection: dropped
    assert target.ready(work) == 0
    client.writer.close()


async def test_messages_given_back_past_max_length_push_out_the_head_at_once(target: Target) -> None:
    dlx, dead = fanout_to_queue(target)
    work = target.unique("work")
    target.declare_queue(work, {"x-max-length": 2, "x-dead-letter-exchange": dlx})
    client = await target.stomp()
    await subscribe(client, work, prefetch=3)
    for n in range(1, 6):
        assert target.publish("", work, str(n))
    assert [(await client.receive()).body for _ in range(3)] == [b"1", b"2", b"3"]
    client.writer.close()  # leaves without acknowledging: back at the head, 5 ready where 2 fit
    await eventually(lambda: target.ready(dead) == 3, what="the head pushed out")
    assert [(got.body, got.headers["x-first-death-reason"]) for got in target.get(dead)] == [
        ("1", "maxlen"), ("2", "maxlen"), ("3", "maxlen"),
    ]
    assert [got.body for got in target.get(work)] == ["4", "5"]


async def test_unroutable_messages_go_to_the_alternate_exchange(target: Target) -> None:
    spare, lost = fanout_to_queue(target, "spare", "lost")
    main, eu = target.unique("main"), target.unique("eu")
    target.declare_exchange(main, "direct", {"alternate-exchange": spare})
    target.declare_queue(eu)
    target.bind(main, eu, "eu")
    assert target.publish(main, "eu", "for eu") and target.publish(main, "us", "for nobody")
    assert [got.body for got in target.get(eu)] == ["for eu"]
    assert [got.body for got in target.get(lost)] == ["for nobody"]


async def test_a_single_active_consumer_gets_everything_until_it_leaves(target: Target) -> None:
    queue = target.unique("sac")
    target.declare_queue(queue, {"x-single-active-consumer": True})
    first, second = await target.stomp(), await target.stomp()
    await subscribe(first, queue)
    await subscribe(second, queue)
    for n in range(3):
        assert target.publish("", queue, f"m{n}")
    assert [(await first.receive()).body for _ in range(3)] == [b"m0", b"m1", b"m2"]
    assert await silent(second)
    first.writer.close()  # leaves without acknowledging: the other takes over, from the first message
    taken = [await second.receive() for _ in range(3)]
    assert [(frame.body, frame.headers["redelivered"]) for frame in taken] == [
        (b"m0", "true"), (b"m1", "true"), (b"m2", "true"),
    ]
    second.writer.close()


async def test_a_full_reject_publish_queue_refuses_the_publisher(target: Target) -> None:
    queue = target.unique("capped")
    target.declare_queue(queue, {"x-max-length": 1, "x-overflow": "reject-publish"})
    assert target.publish("", queue, "first")
    assert not target.publish("", queue, "second")  # nack (RabbitMQ), 409 queue_full (ours)
    assert [got.body for got in target.get(queue)] == ["first"]
    assert target.publish("", queue, "third")  # room again


async def test_a_queue_of_length_0_refuses_or_hands_over_as_its_overflow_says(target: Target) -> None:
    refusing, dropping = target.unique("refusing"), target.unique("dropping")
    target.declare_queue(refusing, {"x-max-length": 0, "x-overflow": "reject-publish"})
    target.declare_queue(dropping, {"x-max-length": 0})
    client = await target.stomp()
    await subscribe(client, refusing, "0")
    await subscribe(client, dropping, "1")
    assert not target.publish("", refusing, "refused")  # the limit counts before a subscriber's room
    assert target.publish("", dropping, "handed over")  # a subscriber with room takes it first
    assert (await client.receive()).body == b"handed over"
    assert await silent(client)
    client.writer.close()


async def test_reject_publish_dlx_dead_letters_what_it_refuses(target: Target) -> None:
    dlx, dead = fanout_to_queue(target)
    queue = target.unique("capped")
    target.declare_queue(queue, {"x-max-length": 1, "x-overflow": "reject-publish-dlx", "x-dead-letter-exchange": dlx})
    assert target.publish("", queue, "first")
    assert not target.publish("", queue, "second")
    await eventually(lambda: target.ready(dead) == 1, what="the refused message dead-lettered")
    (got,) = target.get(dead)
    assert (got.body, got.headers["x-first-death-reason"]) == ("second", "maxlen")
    assert [got.body for got in target.get(queue)] == ["first"]



async def test_a_message_s_own_expiration_dead_letters_it_on_time(target: Target) -> None:
    dlx, dead = fanout_to_queue(target)
    queue = target.unique("work")
    target.declare_queue(queue, {"x-dead-letter-exchange": dlx})
    assert target.publish("", queue, "short", expiration="200")
    assert target.ready(queue) == 1
    await eventually(lambda: target.ready(dead) == 1, timeout=5, what="the message expired")
    (got,) = target.get(dead)
    assert (got.body, got.headers["x-first-death-reason"]) == ("short", "expired")
    (death,) = got.headers["x-death"]
    assert "time" in death and death["original-expiration"] == "200"  # in the entry, not a header
    assert "original-expiration" not in got.headers and "expiration" not in got.headers
    assert target.ready(queue) == 0


async def test_a_priority_queue_gives_the_highest_priority_first(target: Target) -> None:
    queue = target.unique("prio")
    target.declare_queue(queue, {"x-max-priority": 5})
    for body, priority in (("low", None), ("high", 5), ("mid", 3), ("above the top", 9), ("zero", 0)):
        assert target.publish("", queue, body, priority=priority)
    assert [got.body for got in target.get(queue)] == ["high", "above the top", "mid", "low", "zero"]
    client = await target.stomp()
    for body, priority in (("b", 1), ("a", 2)):
        assert target.publish("", queue, body, priority=priority)
    await subscribe(client, queue)
    assert [(await client.receive()).body for _ in range(2)] == [b"a", b"b"]
    client.writer.close()


async def test_max_length_bytes_drops_the_head_or_refuses(target: Target) -> None:
    dlx, dead = fanout_to_queue(target)
    dropping = target.unique("bytes-drop")
    target.declare_queue(dropping, {"x-max-length-bytes": 10, "x-dead-letter-exchange": dlx})
    for body in ("aaaa", "bbbb", "cccc"):  # 4 bytes each: the third goes over, the head is dropped
        assert target.publish("", dropping, body)
    assert [got.body for got in target.get(dropping)] == ["bbbb", "cccc"]
    await eventually(lambda: target.ready(dead) == 1, what="the head dead-lettered")
    assert [got.body for got in target.get(dead)] == ["aaaa"]

    refusing = target.unique("bytes-refuse")
    target.declare_queue(refusing, {"x-max-length-bytes": 10, "x-overflow": "reject-publish"})
    assert target.publish("", refusing, "aaaaaa")
    assert target.publish("", refusing, "bbbb")  # 10 bytes: at the limit, not over
    assert not target.publish("", refusing, "c")  # it would go over: refused
    assert [got.body for got in target.get(refusing)] == ["aaaaaa", "bbbb"]


async def test_exchanges_bound_to_exchanges_route_on_each_once(target: Target) -> None:
    orders, eu, audit = target.unique("orders"), target.unique("eu"), target.unique("audit")
    target.declare_exchange(orders, "topic")
    target.declare_exchange(eu, "direct")
    target.declare_exchange(audit, "fanout")
    work, log = target.unique("eu-work"), target.unique("audit-log")
    target.declare_queue(work)
    target.declare_queue(log)
    target.bind(eu, work, "orders.eu.new")
    target.bind(audit, log)
    target.bind_exchange(orders, eu, "orders.eu.*")
    target.bind_exchange(orders, audit, "#")
    target.bind(orders, log, "orders.#")  # the log is reached twice: it gets one copy
    target.bind_exchange(audit, orders, "#")  # a cycle: each exchange routes a message once
    for key in ("orders.eu.new", "orders.eu.paid", "orders.us.new"):
        assert target.publish(orders, key, key)
    assert [got.body for got in target.get(work)] == ["orders.eu.new"]
    assert [got.body for got in target.get(log)] == ["orders.eu.new", "orders.eu.paid", "orders.us.new"]
    target.delete_exchange(eu)  # its binding from orders goes with it
    assert target.publish(orders, "orders.eu.new", "after")
    assert [got.body for got in target.get(log)] == ["after"] and target.ready(work) == 0


async def test_each_exchange_on_the_way_hands_what_it_matches_nowhere_to_its_alternate(target: Target) -> None:
    spare, lost = fanout_to_queue(target, "spare", "lost")
    front, back = target.unique("front"), target.unique("back")
    target.declare_exchange(front, "direct", {"alternate-exchange": spare})
    target.declare_exchange(back, "direct", {"alternate-exchange": spare})
    work = target.unique("work")
    target.declare_queue(work)
    target.bind(back, work, "job")
    target.bind_exchange(front, back, "job")
    target.bind_exchange(front, back, "other")
    for key in ("job", "other", "none"):  # routed by both; by front, not back; by neither
        assert target.publish(front, key, key)
    assert [got.body for got in target.get(work)] == ["job"]
    assert [got.body for got in target.get(lost)] == ["other", "none"]
