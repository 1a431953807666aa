"""The broker's input rules, each in one place (docs/protocol.md, "Names", "Errors").

The engine, the apps' services, the models' admin forms and the frame parser
all check input with these, so a rule and its error sentence exist once. A
check raises a `BrokerError` naming the field (code `invalid`, or `forbidden`
for what belongs to the broker) and changes nothing; it returns the value in
the form the broker keeps.

Pure: the standard library, the engine's errors, names and JSON codec.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from .errors import BrokerError, Forbidden
from .exchanges import ALTERNATE_EXCHANGE, ExchangeType, alternate_exchange, parse_headers_match
from .jsoncodec import canonical, holds_nul, json_holds_nul
from .names import DEFAULT_EXCHANGE, DEFAULT_EXCHANGE_ALIAS, NAME_PATTERN, RESERVED_PREFIX, held_for

# Routing and binding keys: AMQP's short string, as RabbitMQ (and the stored columns' width).
MAX_KEY: Final = 255
NAME_PROBLEM: Final = "1 to 255 characters of A-Z a-z 0-9 _ . : -"
RESERVED_PROBLEM: Final = "names starting with 'amq.' belong to the broker"
# PostgreSQL keeps U+0000 in no text or jsonb column: refused on every database alike.
NUL_PROBLEM: Final = "must not contain the NUL character (U+0000)"
DEFAULT_EXCHANGE_BINDINGS: Final = "the default exchange binds every queue by its name; it takes no other bindings"


def invalid(field: str, problem: str) -> BrokerError:
    """`invalid`, naming the field and the broken rule."""
    return BrokerError(f"{field}: {problem}", fields={field: [problem]})


def is_name(value: object) -> bool:
    return isinstance(value, str) and NAME_PATTERN.fullmatch(value) is not None


def check_name(kind: str, name: object, *, reserved_ok: bool = False) -> str:
    """An exchange's or a queue's name: `invalid` when malformed, `forbidden` when reserved."""
    if not isinstance(name, str) or not is_name(name):
        raise BrokerError(f"{kind} name {name!r} must be {NAME_PROBLEM}", fields={"name": [NAME_PROBLEM]})
    check_not_reserved(kind, name, reserved_ok=reserved_ok)
    return name


def check_not_reserved(kind: str, name: str, *, reserved_ok: bool = False) -> None:
    """`forbidden` for a name starting with `amq.`, unless the broker itself declares it.
    (The engine checks only this: what it loads was stored, and stays loadable.)"""
    if name.startswith(RESERVED_PREFIX) and not reserved_ok:
        raise Forbidden(f"{kind} name {name!r} is reserved: {RESERVED_PROBLEM}", fields={"name": [RESERVED_PROBLEM]})


def name_field(field: str, value: object) -> str:
    """A name given in a field of a frame or a request (a queue to consume, say)."""
    if not isinstance(value, str) or not is_name(value):
        raise invalid(field, f"must be {NAME_PROBLEM}")
    return value


def exchange_field(value: object, field: str = "exchange") -> str:
    """An exchange named in a message or a subscription: `""` and `amq.default` are the default one."""
    if not isinstance(value, str):
        raise invalid(field, "must be a string")
    if value in (DEFAULT_EXCHANGE, DEFAULT_EXCHANGE_ALIAS):
        return DEFAULT_EXCHANGE
    return name_field(field, value)


def alternate_exchange_field(arguments: Mapping[str, Any]) -> str | None:
    """An exchange's `alternate-exchange` argument given as input: an exchange's name, or `""`
    for the default exchange; None without one. (The router loads what was stored before
    as it is: `alternate_exchange`.)"""
    alternate = alternate_exchange(arguments)
    if alternate is not None and alternate != DEFAULT_EXCHANGE and not is_name(alternate):
        problem = f"must be {NAME_PROBLEM} (or empty, for the default exchange)"
        raise BrokerError(f"exchange argument {ALTERNATE_EXCHANGE!r}: {problem}",
                          fields={"arguments": [f"{ALTERNATE_EXCHANGE}: {problem}"]})
    return alternate


def key_field(field: str, value: object) -> str:
    """A routing key or a binding key."""
    if not isinstance(value, str) or len(value) > MAX_KEY:
        raise invalid(field, f"must be a string of at most {MAX_KEY} characters")
    if holds_nul(value):
        raise invalid(field, NUL_PROBLEM)
    return value


def integer_field(field: str, value: object, *, low: int | None = None, high: int | None = None) -> int:
    """An integer (not a boolean), within `low`..`high` where given."""
    if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low) or (
        high is not None and value > high
    ):
        if low is not None and high is not None:
            raise invalid(field, f"must be an integer from {low} to {high}")
        if low == 1:
            raise invalid(field, "must be a positive integer")
        raise invalid(field, "must be an integer" if low is None else f"must be an integer >= {low}")
    return value


def bool_field(field: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise invalid(field, "must be true or false")
    return value


def mapping_field(field: str, value: object) -> dict[str, Any]:
    """A JSON object with string keys (None is `{}`)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
        raise invalid(field, "must be an object")
    return dict(value)


def object_field(field: str, value: object) -> dict[str, Any]:
    """A JSON object with string keys (None is `{}`) that the database can keep: input."""
    checked = mapping_field(field, value)
    if json_holds_nul(canonical(checked)):
        raise invalid(field, NUL_PROBLEM)
    return checked


def refuse_default_exchange(exchange: str, *, field: str = "exchange") -> None:
    """The default exchange takes no bindings but the implicit ones (`field` names it in
    the error: the binding's exchange, or its destination exchange)."""
    if exchange in (DEFAULT_EXCHANGE, DEFAULT_EXCHANGE_ALIAS):
        raise Forbidden(DEFAULT_EXCHANGE_BINDINGS, fields={field: [DEFAULT_EXCHANGE_BINDINGS]})


def refuse_holding_queue(queue: str) -> None:
    """A delayed exchange's holding queue takes no binding: only its exchange fills it."""
    if held_for(queue) is not None:
        message = f"queue {queue!r} holds a delayed exchange's messages: it takes no binding"
        raise Forbidden(message, fields={"queue": [message]})


def binding_arguments(exchange_type: ExchangeType, arguments: object) -> dict[str, Any]:
    """A binding's arguments for an exchange of this type: an object, and for a headers
    exchange an `x-match` of `all` or `any`."""
    checked = mapping_field("arguments", arguments)
    if exchange_type is ExchangeType.HEADERS:
        parse_headers_match(checked)
    return checked
