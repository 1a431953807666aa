"""Topic routing: the trie against a plain recursive reading of RabbitMQ's rules."""

from __future__ import annotations

from functools import cache

from hypothesis import given, settings
from hypothesis import strategies as st

from broker.engine.exchanges import TopicRoutes, split_topic

NO_HEADERS: dict[str, object] = {}


def topic_matches(binding_key: str, routing_key: str) -> bool:
    """Reference: words split on '.', the empty key has none, `*` takes one word, `#` zero or more."""
    pattern, words = split_topic(binding_key), split_topic(routing_key)

    @cache
    def match(p: int, w: int) -> bool:
        if p == len(pattern):
            return w == len(words)
        if pattern[p] == "#":
            return match(p + 1, w) or (w < len(words) and match(p, w + 1))
        if w == len(words):
            return False
        return (pattern[p] == "*" or pattern[p] == words[w]) and match(p + 1, w + 1)

    return match(0, 0)


def reference_route(bindings: list[tuple[str, str]], routing_key: str) -> set[str]:
    return {queue for queue, key in bindings if topic_matches(key, routing_key)}


def topic_key(alphabet: list[str]) -> st.SearchStrategy[str]:
    # Lists of words joined by '.': [] is the empty key, [""] too, ["", ""] is "." (two empty words).
    return st.lists(st.sampled_from(alphabet), max_size=5).map(".".join)


BINDING_WORDS = ["a", "b", "c", "", "*", "#"]
ROUTING_WORDS = ["a", "b", "c", "", "*", "#"]  # `*` and `#` are plain words in a routing key
bindings_strategy = st.lists(st.tuples(st.sampled_from(["q1", "q2", "q3"]), topic_key(BINDING_WORDS)), max_size=8)


@settings(max_examples=300, deadline=None)
@given(bindings=bindings_strategy, routing_keys=st.lists(topic_key(ROUTING_WORDS), min_size=1, max_size=5))
def test_route_agrees_with_the_reference(bindings: list[tuple[str, str]], routing_keys: list[str]) -> None:
    routes = TopicRoutes()
    for queue, key in bindings:
        routes.add(queue, key, {})
    for routing_key in routing_keys:
        assert set(routes.route(routing_key, NO_HEADERS)) == reference_route(bindings, routing_key)


@settings(max_examples=150, deadline=None)
@given(bindings=bindings_strategy, data=st.data())
def test_removing_bindings_routes_what_is_left_and_empties_the_trie(
    bindings: list[tuple[str, str]], data: st.DataObject
) -> None:
    routes = TopicRoutes()
    for queue, key in bindings:
        routes.add(queue, key, {})
    left = list(bindings)
    order = data.draw(st.permutations(bindings))
    probe = data.draw(topic_key(ROUTING_WORDS))
    for queue, key in order:
        routes.remove(queue, key, {})
        left.remove((queue, key))
        assert set(routes.route(probe, NO_HEADERS)) == reference_route(left, probe)
    assert routes._root.is_empty()
    assert set(routes.route(probe, NO_HEADERS)) == set()


def route(bindings: list[tuple[str, str]], routing_key: str) -> set[str]:
    routes = TopicRoutes()
    for queue, key in bindings:
        routes.add(queue, key, {})
    return set(routes.route(routing_key, NO_HEADERS))


def test_hash_matches_the_empty_key_and_star_does_not() -> None:
    assert route([("q", "#")], "") == {"q"}
    assert route([("q", "*")], "") == set()
    assert route([("q", "*")], "a") == {"q"}
    assert route([("q", "*")], "a.b") == set()


def test_hash_in_the_middle_takes_zero_or_more_words() -> None:
    bindings = [("q", "a.#.b")]
    assert route(bindings, "a.b") == {"q"}
    assert route(bindings, "a.x.b") == {"q"}
    assert route(bindings, "a.x.y.b") == {"q"}
    assert route(bindings, "a.x") == set()
    assert route(bindings, "b.a.b") == set()


def test_double_hash_matches_anything() -> None:
    for key in ("", "a", "a.b.c", "."):
        assert route([("q", "#.#")], key) == {"q"}


def test_empty_words_are_words() -> None:
    assert route([("q", "a..b")], "a..b") == {"q"}
    assert route([("q", "a.*.b")], "a..b") == {"q"}
    assert route([("q", "a.b")], "a..b") == set()
    assert route([("q", "")], "") == {"q"}
    assert route([("q", "")], "a") == set()


def test_a_queue_bound_twice_is_routed_once_and_survives_one_removal() -> None:
    routes = TopicRoutes()
    routes.add("q", "a.*", {})
    routes.add("q", "a.*", {})
    routes.add("q", "#", {})
    assert routes.route("a.b", NO_HEADERS) == {"q"}
    routes.remove("q", "a.*", {})
    routes.remove("q", "#", {})
    assert routes.route("a.b", NO_HEADERS) == {"q"}
    routes.remove("q", "a.*", {})
    assert routes.route("a.b", NO_HEADERS) == set()
    assert routes._root.is_empty()


def test_removing_a_key_keeps_a_longer_key_through_the_same_nodes() -> None:
    routes = TopicRoutes()
    routes.add("q1", "a", {})
    routes.add("q2", "a.b", {})
    routes.remove("q1", "a", {})
    assert routes.route("a.b", NO_HEADERS) == {"q2"}
    assert routes.route("a", NO_HEADERS) == set()
