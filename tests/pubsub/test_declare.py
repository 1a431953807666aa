"""`runhandlers` declaring its handlers' queues over the HTTP API (pubsub/worker/declare.py):
a server error at any step, with a JSON body or a proxy's HTML page, is a connection to
try again (the process reconnects by itself); a refusal stops it with the broker's words;
`<queue>.dead` is declared unless the queue's dead-letter exchange exists."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from pubsub.handling import Handler, Retry
from pubsub.worker.declare import DeclareError, declare
from pubsub.worker.runner import Runner

# (method, path) -> (status, content type, body), or a list of them answered in turn;
# what is not here: 404.
Answer = tuple[int, str, bytes]
Script = dict[tuple[str, str], Answer | list[Answer]]

QUEUE_MADE = (201, "application/json", json.dumps({"name": "jobs", "arguments": {}}).encode())
QUEUE_READ = (200, "application/json", json.dumps({"name": "jobs", "arguments": {}}).encode())
PROXY_PAGE = (502, "text/html", b"<html><body><h1>502 Bad Gateway</h1></body></html>")


@pytest.fixture
def broker_answering(asked: list[tuple[str, str, Any]]) -> Iterator[Any]:
    script: Script = {}

    class Answering(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            asked.append((self.command, self.path, json.loads(body) if body else None))
            found = script.get((self.command, self.path), (404, "application/json", b"{}"))
            status, content_type, body = found.pop(0) if isinstance(found, list) else found
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Answering)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def answering(answers: Script) -> str:
        script.clear()
        script.update(answers)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield answering
    server.shutdown()
    server.server_close()


@pytest.fixture
def asked() -> list[tuple[str, str, Any]]:
    """The requests `broker_answering` was sent: method, path and JSON body."""
    return []


def _handler(exchange: str | None = "orders") -> Handler:
    return Handler(name="h", function=lambda m: None, queue="jobs", exchange=exchange, binding_key="k",
                   concurrency=1, prefetch=10, retry=Retry(), time_limit=None, is_async=False)


@pytest.mark.parametrize(
    "failing",
    [("POST", "/api/bindings/"), ("GET", "/api/queues/jobs/"), ("POST", "/api/queues/")],
    ids=["the binding", "reading the queue", "the queue"],
)
def test_a_server_error_at_any_step_is_tried_again(broker_answering: Any, failing: tuple[str, str]) -> None:
    script: Script = {("POST", "/api/queues/"): QUEUE_MADE, ("POST", "/api/bindings/"): (201, "application/json", b"{}"),
                      ("GET", "/api/queues/jobs/"): QUEUE_READ}
    script[failing] = PROXY_PAGE
    base = broker_answering(script)
    with pytest.raises(ConnectionError):  # an OSError: runhandlers reconnects and declares again
        declare(_handler(), base=base, token="t")


def test_the_dead_queue_s_server_error_is_tried_again_too(broker_answering: Any) -> None:
    base = broker_answering({("POST", "/api/queues/"): [QUEUE_MADE, PROXY_PAGE], ("GET", "/api/queues/jobs/"): QUEUE_READ})
    with pytest.raises(ConnectionError):  # the queue made, its `jobs.dead` not yet
        declare(_handler(exchange=None), base=base, token="t")


def test_a_refusal_stops_with_the_broker_s_words_json_or_not(broker_answering: Any) -> None:
    refused = json.dumps({"error": {"code": "access_refused", "message": "no write right on jobs"}}).encode()
    base = broker_answering({("POST", "/api/queues/"): (403, "application/json", refused)})
    with pytest.raises(DeclareError, match="403.*no write right on jobs"):
        declare(_handler(), base=base, token="t")
    base = broker_answering({("POST", "/api/queues/"): (400, "text/plain", b"Bad Request: not JSON")})
    with pytest.raises(DeclareError, match="400 Bad Request: not JSON"):
        declare(_handler(), base=base, token="t")


@pytest.mark.parametrize(("exchange_answer", "dead_queue_declared"), [
    ((404, "application/json", b"{}"), True),
    ((200, "application/json", json.dumps({"name": "dlx"}).encode()), False),
], ids=["missing", "there"])
def test_the_dead_queue_is_declared_unless_the_dead_letter_exchange_exists(
    broker_answering: Any, asked: list[tuple[str, str, Any]], exchange_answer: Answer, dead_queue_declared: bool
) -> None:
    """A queue whose dead-letter exchange does not exist had no `<queue>.dead` either: its
    dead letters were published to the default exchange, to no queue, and were lost."""
    read = (200, "application/json", json.dumps({"name": "jobs", "arguments": {"x-dead-letter-exchange": "dlx"}}).encode())
    base = broker_answering({("POST", "/api/queues/"): QUEUE_MADE, ("GET", "/api/queues/jobs/"): read,
                             ("GET", "/api/exchanges/dlx/"): exchange_answer})
    declare(_handler(exchange=None), base=base, token="t")
    declared = [body["name"] for method, path, body in asked if (method, path) == ("POST", "/api/queues/")]
    assert declared == (["jobs", "jobs.dead"] if dead_queue_declared else ["jobs"])


@pytest.fixture
def broker_cut_short() -> Iterator[Any]:
    """A node restarting: each request gets the first bytes of an answer, then the connection closes."""
    listener = socket.create_server(("127.0.0.1", 0))
    answer: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn, conn.makefile("rb") as request:
                length = 0
                while (line := request.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                request.read(length)  # all of it: closing with some unread would reset the connection
                conn.sendall(answer[0])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    def cut_short(first_bytes: bytes) -> str:
        answer[:] = [first_bytes]
        return f"http://127.0.0.1:{listener.getsockname()[1]}"

    yield cut_short
    listener.shutdown(socket.SHUT_RDWR)  # wakes its accept()
    listener.close()
    thread.join(timeout=5)


@pytest.mark.parametrize("first_bytes", [
    b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
    b"HTTP/1.1 2",
], ids=["incomplete-read", "bad-status-line"])
def test_an_answer_cut_short_is_a_connection_to_try_again(broker_cut_short: Any, first_bytes: bytes) -> None:
    """http.client's IncompleteRead and BadStatusLine are no OSError: they ended runhandlers."""
    made = Runner([_handler()], urls=["ws://127.0.0.1:1/ws"], token=lambda: "t", grace=1.0)
    try:
        with pytest.raises(ConnectionError):  # an OSError: `_connect_forever` tries again
            made._declare_all(broker_cut_short(first_bytes))
    finally:
        for executor in made._executors.values():
            executor.shutdown(wait=False)
