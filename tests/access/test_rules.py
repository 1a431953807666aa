"""access/rules.py: RabbitMQ's configure/write/read patterns, pure (no database)."""

from __future__ import annotations

import pytest

from access.rules import (
    ANONYMOUS_ALL,
    MAX_CACHED_NAMES,
    NOBODY,
    Permissions,
    check_pattern,
    object_name,
)
from broker.engine.errors import Forbidden


def test_patterns_match_the_whole_name() -> None:
    perms = Permissions("user 'a'", configure="orders", read="orders\\..*")
    assert perms.can_configure("queue", "orders")
    assert not perms.can_configure("queue", "orders2")  # not a search: ^orders$
    assert not perms.can_configure("queue", "my-orders")
    assert perms.can_read("queue", "orders.eu")
    assert not perms.can_read("queue", "orders")


def test_an_empty_pattern_allows_nothing() -> None:
    perms = Permissions("user 'a'", configure=[""], write=[""], read=[""])
    for right in ("configure", "write", "read"):
        assert not perms.can(right, "queue", "x")
        assert not perms.can(right, "exchange", "")
    assert not NOBODY.can_read("queue", "q")


def test_rows_add_up() -> None:
    perms = Permissions("user 'a'", write=["a.*", "", "b.*"])
    assert perms.can_write("exchange", "alpha") and perms.can_write("exchange", "beta")
    assert not perms.can_write("exchange", "gamma")


def test_the_default_exchange_is_matched_as_amq_default() -> None:
    perms = Permissions("user 'a'", write=["amq\\.default"])
    assert perms.can_write("exchange", "") and perms.can_write("exchange", "amq.default")
    assert not Permissions("user 'b'", write=["x"]).can_write("exchange", "")
    assert object_name("queue", "") == ""  # only the exchange has the alias


def test_everything() -> None:
    for perms in (ANONYMOUS_ALL, Permissions.all("user 'root'")):
        assert perms.everything
        assert perms.can_configure("queue", "any") and perms.can_write("exchange", "") and perms.can_read("queue", "q")


def test_a_refusal_names_who_the_right_and_the_object() -> None:
    perms = Permissions("user 'bob'", read="logs")
    perms.require("read", "queue", "logs")
    with pytest.raises(Forbidden) as refused:
        perms.require("write", "exchange", "")
    assert refused.value.message == "user 'bob' has no write permission on exchange 'amq.default'"
    assert (refused.value.code, refused.value.status) == ("forbidden", 403)


def test_answers_are_cached_per_name_and_bounded() -> None:
    perms = Permissions("user 'a'", read="q.*")
    right = perms._rights["read"]
    assert perms.can_read("queue", "q1") and right.answers == {"q1": True}
    right.patterns = ()  # a cached answer does not ask the patterns again
    assert perms.can_read("queue", "q1")
    for n in range(MAX_CACHED_NAMES + 5):
        perms.can_read("queue", f"n{n}")
    assert len(right.answers) <= MAX_CACHED_NAMES


@pytest.mark.parametrize("pattern", ["", ".*", "^orders$", "a|b", "(x)+"])
def test_valid_patterns(pattern: str) -> None:
    check_pattern(pattern)


@pytest.mark.parametrize("pattern", ["(", "[a-", "*x", "a{2,1}"])
def test_invalid_patterns_are_named(pattern: str) -> None:
    with pytest.raises(ValueError, match="is not a regular expression"):
        check_pattern(pattern)
