"""The web console at `/` in headless Chromium against the real `runbroker`.

Everything is checked without a page reload: the overview and the topology
follow the WebSocket's `stats` frames, the forms call the HTTP API, the tail
panel subscribes over the same WebSocket. Each state is kept as a screenshot
in test-artifacts/screenshots/; with UPDATE_DOCS_SCREENSHOT=1 the first test
also refreshes the README's picture, docs/console.png.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from typing import Any

import httpx
import pytest

from tests.browser.conftest import screenshot
from tests.e2e.harness import ROOT, BrokerProcess

try:
    from playwright.sync_api import expect
except ImportError:  # the `browser` fixture reports it: a skip here, a failure under CI
    expect = None

pytestmark = pytest.mark.browser


def queue_cell(page: Any, queue: str, field: str) -> Any:
    return page.locator(f'#queues tr[data-name="{queue}"] [data-field="{field}"]')


def submit(form: Any, **fields: str) -> None:
    for name, value in fields.items():
        field = form.locator(f'[name="{name}"]')
        if field.evaluate("el => el.tagName") == "SELECT":
            field.select_option(value)
        else:
            field.fill(value)
    form.locator('button[type="submit"]').click()


def test_create_bind_publish_and_tail_live_without_a_reload(page: Any) -> None:
    page.evaluate("window.sameDocument = true")  # gone if anything reloaded the page

    exchange_form = page.locator("#exchange-form")
    submit(exchange_form, name="orders", type="topic")
    expect(exchange_form.locator(".form-ok")).to_have_text("exchange orders (topic) created")
    queue_form = page.locator("#queue-form")
    submit(queue_form, name="eu-orders")
    expect(queue_form.locator(".form-ok")).to_have_text("queue eu-orders created")
    expect(queue_cell(page, "eu-orders", "messages_ready")).to_have_text("0")  # from a `stats` frame

    binding_form = page.locator("#binding-form")
    submit(binding_form, exchange="orders", queue="eu-orders", binding_key="orders.eu.*")
    expect(binding_form.locator(".form-ok")).to_contain_text("created")
    expect(page.locator('#bindings tr[data-exchange="orders"][data-queue="eu-orders"]')).to_contain_text("orders.eu.*")
    edge = page.locator('#topology-view g.edge[data-exchange="orders"][data-queue="eu-orders"]')
    expect(edge).to_have_attribute("data-binding-key", "orders.eu.*")
    expect(page.locator('#topology-view text.edge-label[data-exchange="orders"]')).to_have_text("orders.eu.*")
    screenshot(page, "01-topology")

    publish_form = page.locator("#publish-form")
    submit(
        publish_form,
        exchange="orders",
        routing_key="orders.eu.created",
        headers='{"x-trace": "abc"}',
        body='{"id": 42}',
    )
    expect(publish_form.locator("#publish-result")).to_contain_text("routed to 1 queue · message_id ")
    expect(queue_cell(page, "eu-orders", "messages_ready")).to_have_text("1")
    screenshot(page, "02-published")

    tail_form = page.locator("#tail-form")
    submit(tail_form, queue="eu-orders", ack="auto")
    expect(page.locator("#tail-state")).to_have_text("subscribed to queue eu-orders · auto acks")
    first = page.locator("#tail-messages li").first
    expect(first).to_contain_text("orders.eu.created")
    expect(first.locator("pre.body")).to_have_text('{"id":42}')
    expect(first.locator("pre.headers")).to_contain_text('"x-trace":"abc"')
    expect(queue_cell(page, "eu-orders", "messages_ready")).to_have_text("0")
    expect(queue_cell(page, "eu-orders", "consumers")).to_have_text("1")

    for n in (43, 44, 45):  # a few more, a little apart, so the rate chart has a shape
        submit(publish_form, body=f'{{"id": {n}}}')
        expect(page.locator("#tail-messages li").first.locator("pre.body")).to_contain_text(str(n))
        page.wait_for_timeout(400)
    expect(page.locator("#tail-messages li")).to_have_count(4)  # newest first
    expect(page.locator('[data-total="connections"]')).not_to_have_text("0")
    assert page.evaluate("window.sameDocument") is True
    names = page.locator("#exchanges tbody tr").evaluate_all("rows => rows.map(row => row.dataset.name)")
    assert sorted(names) == sorted(set(names)) and "orders" in names and "" in names
    shot = screenshot(page, "03-tail")
    if os.environ.get("UPDATE_DOCS_SCREENSHOT") == "1":
        shutil.copyfile(shot, ROOT / "docs" / "console.png")

    page.locator("#rates-source").select_option("eu-orders")
    screenshot(page, "04-queue-rates")
    tail_form.locator('button[name="stop"]').click()
    expect(page.locator("#tail-state")).to_have_text("not subscribed")
    expect(queue_cell(page, "eu-orders", "consumers")).to_have_text("0")


def test_client_acks_with_ack_nack_and_reject_buttons(page: Any, broker: BrokerProcess) -> None:
    http = httpx.Client(base_url=broker.url, timeout=10)
    assert http.post("/api/queues/", json={"name": "jobs"}).status_code == 201
    for n in (1, 2):
        assert (
            http.post("/api/exchanges/amq.default/publish/", json={"routing_key": "jobs", "body": {"job": n}}).json()[
                "routed"
            ]
            == 1
        )

    submit(page.locator("#tail-form"), queue="jobs", ack="client")
    expect(page.locator("#tail-state")).to_contain_text("client acks")
    messages = page.locator("#tail-messages li")
    expect(messages).to_have_count(2)
    expect(messages.first).to_contain_text('"job":2')  # newest first
    expect(queue_cell(page, "jobs", "messages_unacknowledged")).to_have_text("2")

    job1 = messages.filter(has_text='"job":1')
    job1.get_by_role("button", name="Ack", exact=True).click()
    expect(job1.locator(".outcome")).to_have_text("acknowledged")
    expect(job1.get_by_role("button", name="Ack", exact=True)).to_be_disabled()
    expect(queue_cell(page, "jobs", "messages_unacknowledged")).to_have_text("1")

    messages.filter(has_text='"job":2').get_by_role("button", name="Nack (requeue)").click()
    redelivered = messages.filter(has=page.locator(".tag", has_text="redelivered"))
    expect(redelivered).to_have_count(1)  # requeued, and delivered again to the same subscription
    expect(redelivered).to_contain_text('"job":2')
    screenshot(page, "05-client-acks")

    redelivered.get_by_role("button", name="Reject").click()
    expect(redelivered.locator(".outcome")).to_have_text("rejected")
    expect(queue_cell(page, "jobs", "messages_unacknowledged")).to_have_text("0")
    expect(queue_cell(page, "jobs", "messages_ready")).to_have_text("0")


def test_the_tail_subscribes_once_however_often_it_is_submitted(page: Any, broker: BrokerProcess) -> None:
    """A second submit before the first one's subscribe is answered (two quick ones, a double click
    while subscribed: the unsubscribe's round trip comes first) is ignored: a second subscription
    would take, with auto acks, a share of the queue's messages that the tail never shows."""
    http = httpx.Client(base_url=broker.url, timeout=10)
    http.post("/api/queues/", json={"name": "once"}).raise_for_status()

    def publish_and_see(first: int, count: int) -> None:
        for n in range(first, first + count):
            body = {"routing_key": "once", "body": n}
            assert http.post("/api/exchanges/amq.default/publish/", json=body).json()["routed"] == 1
        expect(page.locator("#tail-messages li")).to_have_count(first + count - 1)  # every one, none taken unseen
        assert http.get("/api/queues/once/").json()["consumers"] == 1

    tail_form = page.locator("#tail-form")
    start = tail_form.locator('button[type="submit"]')
    tail_form.locator('select[name="queue"]').select_option("once")
    # Both in one task, with no answer in between; the button is off until the subscribe is answered.
    off_while_subscribing = tail_form.evaluate(
        "form => { form.requestSubmit(); form.requestSubmit(); return form.elements.start.disabled; }"
    )
    expect(page.locator("#tail-state")).to_have_text("subscribed to queue once · auto acks")
    expect(start).to_be_enabled()
    publish_and_see(1, 6)
    assert off_while_subscribing is True

    start.dblclick()
    expect(start).to_be_enabled()
    expect(page.locator("#tail-state")).to_have_text("subscribed to queue once · auto acks")
    publish_and_see(7, 6)
    tail_form.locator('button[name="stop"]').click()
    expect(queue_cell(page, "once", "consumers")).to_have_text("0")
    http.close()


def test_api_errors_are_shown_next_to_their_field(page: Any) -> None:
    queue_form = page.locator("#queue-form")
    submit(queue_form, name="bad name!")
    expect(queue_form.locator('[data-error-for="name"]')).to_contain_text("invalid: 1 to 255 characters")
    expect(queue_form.locator('input[name="name"]')).to_have_attribute("aria-invalid", "true")

    submit(queue_form, name="amq.mine")  # reserved: 403, shown next to the name too
    expect(queue_form.locator('[data-error-for="name"]')).to_contain_text("forbidden: names starting with 'amq.'")

    publish_form = page.locator("#publish-form")
    submit(publish_form, exchange="amq.default", routing_key="k" * 256, body="{}")
    expect(publish_form.locator('[data-error-for="routing_key"]')).to_contain_text(
        "invalid: must be a string of at most 255"
    )
    submit(publish_form, routing_key="k", body="{not json")
    expect(publish_form.locator('[data-error-for="body"]')).to_contain_text("invalid: not valid JSON")
    expect(publish_form.locator('[data-error-for="routing_key"]')).to_have_text("")

    exchange_form = page.locator("#exchange-form")
    submit(exchange_form, name="audit", type="fanout")
    expect(exchange_form.locator(".form-ok")).to_contain_text("created")
    submit(exchange_form, name="audit", type="direct")  # exists with another type
    expect(exchange_form.locator('[data-error-for="__form__"]')).to_contain_text("precondition_failed")
    screenshot(page, "06-errors")


def test_exchange_tail_and_deletes_from_the_page(page: Any, broker: BrokerProcess) -> None:
    http = httpx.Client(base_url=broker.url, timeout=10)
    http.post("/api/exchanges/", json={"name": "news", "type": "topic"}).raise_for_status()
    http.post("/api/queues/", json={"name": "sports"}).raise_for_status()
    http.post(
        "/api/bindings/", json={"exchange": "news", "queue": "sports", "binding_key": "sports.#"}
    ).raise_for_status()

    tail_form = page.locator("#tail-form")
    tail_form.locator('input[name="source"][value="exchange"]').check()
    submit(tail_form, exchange="news", binding_key="*.tennis")
    expect(page.locator("#tail-state")).to_contain_text("via amq.gen-")
    private = page.locator('#topology-view g.edge[data-exchange="news"][data-binding-key="*.tennis"]')
    expect(private).to_have_count(1)  # the subscription's private queue, drawn like any other
    http.post("/api/exchanges/news/publish/", json={"routing_key": "sports.tennis", "body": "ace"}).raise_for_status()
    expect(page.locator("#tail-messages li").first.locator("pre.body")).to_have_text('"ace"')
    screenshot(page, "07-exchange-tail")

    row = page.locator('#bindings tr[data-exchange="news"][data-queue="sports"]')
    row.get_by_role("button", name="Delete").click()
    row.get_by_role("button", name="Confirm").click()  # a second click confirms
    expect(row).to_have_count(0)
    expect(page.locator('#topology-view g.edge[data-queue="sports"]')).to_have_count(0)

    queue_row = page.locator('#queues tr[data-name="sports"]')
    queue_row.get_by_role("button", name="Delete").click()
    queue_row.get_by_role("button", name="Confirm").click()
    expect(queue_row).to_have_count(0)

    tail_form.locator('button[name="stop"]').click()
    exchange_row = page.locator('#exchanges tr[data-name="news"]')
    exchange_row.get_by_role("button", name="Delete").click()
    exchange_row.get_by_role("button", name="Confirm").click()
    expect(exchange_row).to_have_count(0)
    expect(page.locator('#topology-view g.node.exchange[data-name="news"]')).to_have_count(0)


def test_a_headers_binding_is_deleted_whatever_the_order_of_its_arguments(page: Any, broker: BrokerProcess) -> None:
    """The delete button finds the binding's id in `GET /api/bindings/` by its arguments. The
    stats frame keeps their keys in the order sent; on PostgreSQL the API lists them in
    jsonb's order, and a headers binding of two or more could not be deleted ("this binding
    no longer exists"). The list is answered here with its keys in another order, as
    PostgreSQL does, so that this runs on SQLite too."""
    http = httpx.Client(base_url=broker.url, timeout=10)
    http.post("/api/exchanges/", json={"name": "by-headers", "type": "headers"}).raise_for_status()
    http.post("/api/queues/", json={"name": "eu-kinds"}).raise_for_status()
    sent = {"x-match": "all", "kind": "order", "region": "eu"}
    http.post("/api/bindings/", json={"exchange": "by-headers", "queue": "eu-kinds", "arguments": sent}).raise_for_status()

    def listed_in_another_order(route: Any) -> None:
        if route.request.method != "GET":
            route.continue_()
            return
        answer = route.fetch()
        bindings = answer.json()
        for binding in bindings:
            binding["arguments"] = dict(sorted(binding["arguments"].items(), reverse=True))
            assert list(binding["arguments"]) != list(sent)
        route.fulfill(response=answer, json=bindings)

    page.route(re.compile(r".*/api/bindings/\?.*"), listed_in_another_order)
    row = page.locator('#bindings tr[data-exchange="by-headers"][data-queue="eu-kinds"]')
    row.get_by_role("button", name="Delete").click()
    row.get_by_role("button", name="Confirm").click()
    expect(row).to_have_count(0)
    assert http.get("/api/bindings/", params={"exchange": "by-headers"}).json() == []


def test_an_exchange_bound_to_an_exchange_from_the_form(page: Any, broker: BrokerProcess) -> None:
    http = httpx.Client(base_url=broker.url, timeout=10)
    http.post("/api/exchanges/", json={"name": "inbound", "type": "topic"}).raise_for_status()
    http.post("/api/exchanges/", json={"name": "billing", "type": "fanout"}).raise_for_status()
    http.post("/api/queues/", json={"name": "invoices"}).raise_for_status()
    http.post("/api/bindings/", json={"exchange": "billing", "queue": "invoices"}).raise_for_status()
    # A queue of the destination exchange's name, bound the same way: a row and an edge of its own.
    http.post("/api/queues/", json={"name": "billing"}).raise_for_status()
    http.post("/api/bindings/", json={"exchange": "inbound", "queue": "billing", "binding_key": "bill.*"}).raise_for_status()

    binding_form = page.locator("#binding-form")
    expect(binding_form.locator('select[name="destination_exchange"]')).to_be_hidden()
    submit(binding_form, exchange="inbound", destination="exchange", destination_exchange="billing", binding_key="bill.*")
    expect(binding_form.locator(".form-ok")).to_have_text("binding inbound → exchange billing “bill.*” created")
    expect(binding_form.locator('select[name="queue"]')).to_be_hidden()
    row = page.locator('#bindings tr[data-exchange="inbound"][data-destination-exchange="billing"]')
    expect(row).to_contain_text("exchange billing")
    expect(row).not_to_have_attribute("data-queue", re.compile(".*"))
    expect(page.locator('#bindings tr[data-exchange="inbound"][data-queue="billing"]')).to_have_count(1)
    expect(page.locator("#bindings tbody")).not_to_contain_text("null")
    edge = page.locator('#topology-view g.edge[data-exchange="inbound"][data-destination-exchange="billing"]')
    expect(edge).to_have_attribute("data-binding-key", "bill.*")
    expect(edge).not_to_have_attribute("data-queue", re.compile(".*"))
    expect(edge.locator("path")).to_have_attribute("stroke-dasharray", "5 3")  # drawn apart from queue edges
    expect(page.locator('#topology-view g.edge[data-exchange="inbound"][data-queue="billing"]')).to_have_count(1)
    expect(page.locator('#topology-view g.edge[data-exchange="billing"][data-queue="invoices"]')).to_have_count(1)
    screenshot(page, "09-exchange-to-exchange")

    publish_form = page.locator("#publish-form")
    submit(publish_form, exchange="inbound", routing_key="bill.new", headers="{}", body='{"id": 7}')
    expect(publish_form.locator("#publish-result")).to_contain_text("routed to 2 queues")  # billing, and invoices on
    expect(queue_cell(page, "invoices", "messages_ready")).to_have_text("1")
    expect(queue_cell(page, "billing", "messages_ready")).to_have_text("1")

    row.get_by_role("button", name="Delete").click()
    row.get_by_role("button", name="Confirm").click()
    expect(row).to_have_count(0)
    expect(edge).to_have_count(0)
    expect(page.locator('#bindings tr[data-exchange="inbound"][data-queue="billing"]')).to_have_count(1)  # not this one
    assert http.get("/api/bindings/", params={"destination_exchange": "billing"}).json() == []
    submit(publish_form, body='{"id": 8}')
    expect(publish_form.locator("#publish-result")).to_contain_text("routed to 1 queue ·")
    expect(queue_cell(page, "billing", "messages_ready")).to_have_text("2")
    expect(queue_cell(page, "invoices", "messages_ready")).to_have_text("1")


def test_a_logged_in_user_changes_the_broker_with_the_csrf_token(page: Any, broker: BrokerProcess) -> None:
    # Session-authenticated API calls are CSRF-checked by DRF: this fails with
    # 403 unless the console sends X-CSRFToken from the csrftoken cookie.
    env = {
        **broker.env,
        "DJANGO_SUPERUSER_USERNAME": "op",
        "DJANGO_SUPERUSER_PASSWORD": "op-secret-42",
        "DJANGO_SUPERUSER_EMAIL": "op@example.invalid",
    }
    subprocess.run(
        [sys.executable, "manage.py", "createsuperuser", "--noinput"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    page.goto("/admin/login/?next=/")
    page.fill("#id_username", "op")
    page.fill("#id_password", "op-secret-42")
    page.locator('input[type="submit"]').click()
    page.wait_for_url(f"{broker.url}/")
    expect(page.locator("#status")).to_have_attribute("data-state", "live")
    queue_form = page.locator("#queue-form")
    submit(queue_form, name="audited")
    expect(queue_form.locator(".form-ok")).to_have_text("queue audited created")
    expect(page.locator('#queues tr[data-name="audited"]')).to_have_count(1)
    screenshot(page, "08-logged-in")


def test_the_handlers_panel_lists_running_handler_processes(page: Any, broker: BrokerProcess) -> None:
    import datetime

    from tests.e2e.handlers_harness import query

    seen = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    query(broker, (
        "INSERT INTO pubsub_handlerstatus (process, hostname, pid, handler, queue, concurrency, started_at, seen_at,"
        " running, handled, failed, retried, dead_lettered, already_handled, handled_rate) VALUES"
        f" ('web-1:42:1', 'web-1', 42, 'shop.handlers.bill', 'billing', 4, '{seen}', '{seen}', 2, 1234, 3, 2, 1, 0,"
        " 57.5)"
    ))
    row = page.locator("#handlers tbody tr", has_text="shop.handlers.bill")
    expect(row).to_contain_text("billing")
    expect(row.locator('[data-field="handled_rate"]')).to_have_text("58")
    expect(row.locator('[data-field="handled"]')).to_have_text("1234")
    expect(row.locator('[data-field="dead_lettered"]')).to_have_text("1")
    expect(page.locator("#handlers p.empty")).to_be_hidden()
    query(broker, "DELETE FROM pubsub_handlerstatus")
    expect(page.locator("#handlers p.empty")).to_be_visible()


def test_rabbitmq_features_show_as_labels_next_to_their_names(page: Any, broker: BrokerProcess) -> None:
    """Declared through the API while the page is open: the labels come with the `stats` frame;
    after a reload, from the page itself."""
    with httpx.Client(base_url=broker.url, timeout=10) as api:
        assert api.post("/api/exchanges/", json={"name": "spare", "type": "fanout"}).status_code == 201
        assert api.post("/api/exchanges/", json={"name": "main", "type": "direct",
                                                 "arguments": {"alternate-exchange": "spare"}}).status_code == 201
        assert api.post("/api/exchanges/", json={"name": "later", "type": "x-delayed-message",
                                                 "arguments": {"x-delayed-type": "topic"}}).status_code == 201
        answer = api.post("/api/queues/", json={"name": "work", "arguments": {
            "x-queue-type": "quorum", "x-delivery-limit": 3, "x-single-active-consumer": True,
            "x-max-length": 10, "x-overflow": "reject-publish", "x-dead-letter-exchange": "spare",
        }})
        assert answer.status_code == 201, answer.text
    for reloaded in (False, True):
        if reloaded:
            page.reload()
        name = page.locator('#queues tr[data-name="work"] td.name')
        expect(name).to_contain_text("quorum")
        expect(name).to_contain_text("delivery limit 3")
        expect(name).to_contain_text("single active consumer")
        expect(name).to_contain_text("max 10")
        expect(name).to_contain_text("reject-publish")
        expect(name).to_contain_text("dlx spare")
        expect(page.locator('#exchanges tr[data-name="main"] td.name')).to_contain_text("alternate spare")
        expect(page.locator('#exchanges tr[data-name="later"] td.name')).to_contain_text("delayed, as topic")
        expect(page.locator('#queues tr[data-name="amq.delayed.later"]')).to_have_count(1)
    screenshot(page, "console-queue-features")


def test_a_queue_left_out_of_the_frames_keeps_its_rates_until_they_are_older_than_the_chart(page: Any) -> None:
    """The `stats` frames list the 500 fullest queues: a queue that leaves the list and comes
    back keeps its rate history, with a gap where it was left out, and is forgotten once all
    of it is older than the chart's minute, or at once when a frame lists every queue (it is
    gone). The chart draws no line across a gap, and a lone sample as a dash."""
    main = page.locator('script[type="module"]').get_attribute("src")
    seen = page.evaluate(
        """async (chart) => {
            const { RateChart, RateHistory } = await import(chart);
            const history = new RateHistory();
            const frame = (names, total = 600) => ({
                totals: { queues: total },
                queues: names.map((name) => ({ name, publish_rate: 2, deliver_rate: 1, ack_rate: 1 })),
            });
            const shape = (name) => history.of(name).map((s) => (s.gap ? "gap" : s.t));
            const seen = {};
            history.add(frame(["a", "b", "c"]), 0);
            history.add(frame(["a", "b", "c"]), 1000);
            history.add(frame(["a"]), 2000);
            history.add(frame(["a"]), 3000);
            seen.left_out = shape("b");
            history.add(frame(["a", "b"]), 4000);
            seen.back = shape("b");
            history.add(frame(["a"]), 63500);
            seen.aging = shape("b");
            history.add(frame(["a"]), 66500);
            seen.forgotten = !history.has("b") && shape("b").length === 0;
            seen.a = shape("a");
            history.add(frame(["a"], 1), 67500);  // every queue listed: c is gone, not left out
            seen.gone = !history.has("c");

            // Drawn: a run of two samples, a gap, a lone sample, a gap, a run of two.
            const canvas = document.createElement("canvas");
            canvas.style.width = "600px";
            canvas.style.height = "200px";
            document.body.append(canvas);
            const now = Date.now();
            const at = (ago, rate = 1) => ({ t: now - ago, published: rate, delivered: rate, acknowledged: rate });
            const drawing = new RateChart(canvas);
            drawing.show([at(50000, 2), at(44000), { t: now - 40000, gap: true }, at(30000), { t: now - 26000, gap: true },
                          at(10000), at(0)]);
            const g = canvas.getContext("2d");
            const ratio = window.devicePixelRatio || 1;
            const x = (ago) => 44 + (600 - 44 - 10) * (1 - ago / 60000);  // the chart's own x, padding as drawn
            const colored = (ago) => {  // pixels of a series' colour in the column `ago` ms back
                const column = g.getImageData(Math.round(x(ago) * ratio), 0, 1, canvas.height).data;
                let count = 0;
                for (let i = 0; i < column.length; i += 4) {
                    const [r, gr, b, alpha] = column.slice(i, i + 4);
                    if (alpha && Math.max(r, gr, b) - Math.min(r, gr, b) > 60) count += 1;
                }
                return count;
            };
            seen.drawn = { run: colored(47000), gap: colored(36000), lone: colored(30000), gap2: colored(18000), end: colored(5000) };
            canvas.remove();
            return seen;
        }""",
        main.replace("main.js", "chart.js"),
    )
    assert seen["left_out"] == [0, 1000, "gap"]
    assert seen["back"] == [0, 1000, "gap", 4000]
    assert seen["aging"] == [4000, "gap"]  # older than the window (and a leading gap) dropped
    assert seen["forgotten"] is True
    assert seen["a"] == [63500, 66500]  # a listed queue: each frame's sample within the window
    assert seen["gone"] is True
    drawn = seen["drawn"]
    assert drawn["run"] and drawn["lone"] and drawn["end"], drawn
    assert drawn["gap"] == 0 and drawn["gap2"] == 0, drawn


def test_past_500_queues_the_lists_say_how_many_they_leave_out_and_the_forms_find_the_others(
    page: Any, broker: BrokerProcess
) -> None:
    """The `stats` frame lists at most 500 queues (those holding the most messages): the
    console says so, and still shows the deepest one. The forms' queue choices then have a
    find field, which offers a queue left out of the lists, and the tail subscribes to it."""
    names = [f"many-{n:03d}" for n in range(501)]
    tail_form = page.locator("#tail-form")
    find = tail_form.locator('input[data-find="queues"]')
    expect(find).to_be_hidden()
    with httpx.Client(base_url=broker.url, timeout=10) as api:
        for name in names:
            assert api.post("/api/queues/", json={"name": name}).status_code == 201
        assert api.post("/api/exchanges/amq.default/publish/", json={"routing_key": "many-500", "body": 1}).status_code == 200
        try:
            expect(page.locator('[data-listed="queues"]')).to_have_text(re.compile(r"^500 of \d+ listed$"))
            expect(queue_cell(page, "many-500", "messages_ready")).to_have_text("1")
            listed = set(page.locator("#queues tr[data-name]").evaluate_all("rows => rows.map(r => r.dataset.name)"))
            left_out = next(name for name in names if name not in listed)
            select = tail_form.locator('select[name="queue"]')
            assert left_out not in select.evaluate("s => [...s.options].map(o => o.value)")

            expect(find).to_be_visible()
            find.fill(left_out.upper())  # in any case
            find.press("Enter")  # looks it up at once; submits nothing
            expect(select).to_have_value(left_out)
            expect(select.locator("option")).to_have_count(1)
            expect(page.locator("#tail-state")).to_have_text("not subscribed")
            page.wait_for_timeout(1500)  # stats frames come and go: the select keeps what was found
            expect(select).to_have_value(left_out)
            tail_form.locator('button[type="submit"]').click()
            expect(page.locator("#tail-state")).to_contain_text(f"subscribed to queue {left_out}")
            publish = {"routing_key": left_out, "body": "found"}
            assert api.post("/api/exchanges/amq.default/publish/", json=publish).status_code == 200
            expect(page.locator("#tail-messages li").first.locator("pre.body")).to_have_text('"found"')
            tail_form.locator('button[name="stop"]').click()
            find.fill("no-such-queue")
            # A page redrawing 500 rows each second on a loaded machine may take its time.
            expect(tail_form.locator('[data-error-for="queue"]')).to_contain_text("no queues named like", timeout=20_000)
            expect(select.locator("option")).to_have_count(0)
            find.fill("")  # cleared: the select is the frame's again, at once
            expect(select.locator("option")).to_have_count(500)
            find.fill(left_out)

            # The rate chart's queue stays a choice when the queue leaves the list. Equally
            # full queues are listed in the order they were declared: the last empty one
            # listed leaves once the one left out holds a message.
            rate_source = page.locator("#rates-source")
            leaving = max(name for name in listed if name.startswith("many-") and name != "many-500")
            rate_source.select_option(leaving)
            publish = {"routing_key": left_out, "body": "in"}
            assert api.post("/api/exchanges/amq.default/publish/", json=publish).status_code == 200
            expect(page.locator(f'#queues tr[data-name="{left_out}"]')).to_have_count(1)
            expect(page.locator(f'#queues tr[data-name="{leaving}"]')).to_have_count(0)
            expect(rate_source).to_have_value(leaving)
            expect(rate_source.locator("option:checked")).to_have_text(f"queue {leaving} (not listed now)")
        finally:
            for name in names:
                api.delete(f"/api/queues/{name}/")
    expect(page.locator('[data-listed="queues"]')).to_have_text("")
    expect(find).to_be_visible()  # it holds a text: it stays until cleared
    find.fill("")
    expect(find).to_be_hidden()


def test_past_500_exchanges_the_forms_find_the_others(page: Any, broker: BrokerProcess) -> None:
    """The exchanges' find fields: the publish form offers the default exchange among what
    it finds, the binding form does not (nothing binds to or from it)."""
    names = [f"wide-{n:03d}" for n in range(501)]
    publish_form, binding_form = page.locator("#publish-form"), page.locator("#binding-form")
    with httpx.Client(base_url=broker.url, timeout=10) as api:
        for name in names:
            assert api.post("/api/exchanges/", json={"name": name, "type": "fanout"}).status_code == 201
        try:
            expect(page.locator('[data-listed="exchanges"]')).to_have_text(re.compile(r"^500 of \d+ listed$"))
            select = publish_form.locator('select[name="exchange"]')
            offered = set(select.evaluate("s => [...s.options].map(o => o.value)"))
            left_out = next(name for name in names if name not in offered)
            find = publish_form.locator('input[data-find="exchanges"]')
            find.fill(left_out)
            expect(select).to_have_value(left_out)
            find.fill("amq.def")
            expect(select.locator("option")).to_have_text(["(default)"])
            expect(select).to_have_value("amq.default")
            binding_find = binding_form.locator('input[data-find="exchanges"]').first
            binding_find.fill("amq.def")
            expect(binding_form.locator('select[name="exchange"] option')).to_have_count(0)
            binding_find.fill(left_out)
            expect(binding_form.locator('select[name="exchange"]')).to_have_value(left_out)
            destination_find = binding_form.locator('input[data-find="exchanges"]').last
            expect(destination_find).to_be_hidden()  # bound to a queue: the destination exchange's is not in use
            binding_form.locator('select[name="destination"]').select_option("exchange")
            expect(destination_find).to_be_visible()
            find.fill("")
            binding_find.fill("")
        finally:
            for name in names:
                api.delete(f"/api/exchanges/{name}/")
    expect(publish_form.locator('input[data-find="exchanges"]')).to_be_hidden()


def test_a_queue_and_an_exchange_declared_again_right_after_their_delete_come_back_as_declared(
    page: Any, broker: BrokerProcess
) -> None:
    """Clients that reconnect declare their queues again: one may be back before the next `stats`
    frame. Its row, dimmed by the delete, is live again, with the new declaration's durability,
    labels and Delete button (it kept the old ones, dimmed and off, for good)."""
    api = httpx.Client(base_url=broker.url, timeout=10)
    api.post("/api/queues/", json={"name": "phoenix"}).raise_for_status()
    api.post("/api/exchanges/", json={"name": "ember", "type": "fanout"}).raise_for_status()
    queue_row = page.locator('#queues tr[data-name="phoenix"]')
    exchange_row = page.locator('#exchanges tr[data-name="ember"]')
    expect(queue_row.locator("td").nth(1)).to_have_text("yes")
    expect(exchange_row).to_have_count(1)

    def declared_again(path: str, declaration: dict[str, object]) -> Any:
        def handle(route: Any) -> None:
            if route.request.method != "DELETE":
                route.continue_()
                return
            deleted = route.fetch()  # the broker deletes it, then a client declares it again
            api.post(path, json=declaration).raise_for_status()
            route.fulfill(response=deleted)
        return handle

    page.route("**/api/queues/phoenix/", declared_again(
        "/api/queues/", {"name": "phoenix", "durable": False, "arguments": {"x-max-length": 5}}))
    queue_row.get_by_role("button", name="Delete").click()
    queue_row.get_by_role("button", name="Confirm").click()
    expect(queue_row.locator("td.name")).to_contain_text("max 5")
    expect(queue_row.locator("td").nth(1)).to_have_text("no")
    expect(queue_row).not_to_have_class(re.compile(r"\bgone\b"))
    expect(queue_row.get_by_role("button", name="Delete")).to_be_enabled()

    page.route("**/api/exchanges/ember/", declared_again("/api/exchanges/", {"name": "ember", "type": "fanout"}))
    exchange_row.get_by_role("button", name="Delete").click()
    with page.expect_response(lambda answer: answer.request.method == "DELETE"):
        exchange_row.get_by_role("button", name="Confirm").click()
    expect(exchange_row).not_to_have_class(re.compile(r"\bgone\b"))  # the next frame lists it again
    expect(exchange_row.get_by_role("button", name="Delete")).to_be_enabled()
    screenshot(page, "console-declared-again")

    # And a delete that stays one still takes the row away.
    page.unroute("**/api/queues/phoenix/")
    queue_row.get_by_role("button", name="Delete").click()
    queue_row.get_by_role("button", name="Confirm").click()
    expect(queue_row).to_have_count(0)
    api.close()
