"""test_orders.py - the orders service as branch systems, staff and the tracking page use it:
placing, the status lifecycle with only legal transitions, tracking by code showing nothing
private, lists with paging, resends and events arriving out of order, the late sweep with a
clock the test controls, and the events every change leaves in the service's log."""

import datetime
import time
import uuid

import pytest
from crm.v1 import common_pb2, orders_pb2

PLACED = orders_pb2.ORDER_STATUS_PLACED
CONFIRMED = orders_pb2.ORDER_STATUS_CONFIRMED
IN_PREPARATION = orders_pb2.ORDER_STATUS_IN_PREPARATION
READY = orders_pb2.ORDER_STATUS_READY
SHIPPED = orders_pb2.ORDER_STATUS_SHIPPED
DELIVERED = orders_pb2.ORDER_STATUS_DELIVERED
COMPLETED = orders_pb2.ORDER_STATUS_COMPLETED
CANCELLED = orders_pb2.ORDER_STATUS_CANCELLED
DELAYED = orders_pb2.ORDER_STATUS_DELAYED

ALPHABET = set("23456789ABCDEFGHJKMNPQRSTUVWXYZ")
HOUR_MS = 3600 * 1000


def now_ms():
    return int(time.time() * 1000)


def status_name(status):
    return orders_pb2.OrderStatus.Name(status)[len("ORDER_STATUS_"):]


def payload_of(event):
    """The event's payload as crm.v1.<EventName> of its topic; fails on unknown fields."""
    service, _, name = event.topic.partition(".")
    assert service == "orders", event.topic
    cls = getattr(orders_pb2, name, None)
    assert cls is not None, "no message crm.v1.%s for topic %s" % (name, event.topic)
    message = cls()
    message.ParseFromString(event.payload)
    known = cls()
    known.CopyFrom(message)
    known.DiscardUnknownFields()
    assert known.SerializeToString() == message.SerializeToString(), event.topic
    return message


def last_position(api):
    return api.must(api.get_events(after_position=0, limit=1)).last_position


def events_after(api, after, want_request_ids=(), timeout_s=5.0, settle_s=0.0):
    """The events after position `after`, once every request id wanted has one (the
    sequencer positions committed events shortly after the commit), and settle_s more
    seconds for any that should not come."""
    end = time.monotonic() + timeout_s
    settled = None
    while True:
        events, position = [], after
        while True:
            response = api.must(api.get_events(after_position=position, limit=1000))
            events += list(response.events)
            if len(response.events) < 1000:
                break
            position = response.events[-1].position
        seen = {e.request_id for e in events}
        if set(want_request_ids) <= seen:
            if settled is None:
                settled = time.monotonic() + settle_s
            if time.monotonic() >= settled:
                return events
        elif time.monotonic() >= end:
            return events
        time.sleep(0.05)


def events_of(events, order_id, topic=None):
    """The events about one order, decoded, as (topic, payload, event) triples."""
    found = []
    for e in events:
        p = payload_of(e)
        if p.order_id == order_id and (topic is None or e.topic == topic):
            found.append((e.topic, p, e))
    return found


def place(orders_api, **fields):
    return orders_api.must(orders_api.place(**fields)).order


@pytest.fixture(autouse=True)
def service_survives(new_client, orders_api):
    yield
    type(orders_api)(new_client(), orders_api.default_branch).still_serving()


def test_place_and_get(orders_api, branch):
    contact = str(uuid.uuid4())
    promised = now_ms() + 2 * HOUR_MS
    items = [orders_api.item("sku-1", "Beans", 2, 150), orders_api.item("sku-2", "Mug", 1, 990)]
    order = place(orders_api, items=items, contact_id=contact, customer_first_name="Anna",
                  promised_by_unix_ms=promised)
    assert uuid.UUID(order.id)
    assert order.branch == branch  # from RequestMeta
    assert order.contact_id == contact
    assert order.status == PLACED
    assert order.total.minor_units == 2 * 150 + 990 and order.total.currency == "EUR"
    assert order.currency == "EUR"
    assert [(i.product_id, i.name, i.quantity, i.unit_price_minor) for i in order.items] == [
        ("sku-1", "Beans", 2, 150), ("sku-2", "Mug", 1, 990)]
    assert len(order.tracking_code) == 12 and set(order.tracking_code) <= ALPHABET
    assert order.promised_by_unix_ms == promised
    assert not order.late
    assert order.version == 1
    assert order.customer_first_name == "Anna"
    assert abs(order.created_unix_ms - now_ms()) < 60000
    assert len(order.history) == 1
    first = order.history[0]
    assert first.from_status == 0 and first.to_status == PLACED
    assert first.branch == branch and first.promised_by_unix_ms == promised
    got = orders_api.must(orders_api.get(order.id)).order
    assert got == order

    # The order's branch may be given in the order itself
    other = place(orders_api, branch=branch + "-pickup")
    assert other.branch == branch + "-pickup"


def test_tracking_codes_differ_and_are_not_the_id(orders_api):
    codes = {place(orders_api).tracking_code for _ in range(20)}
    assert len(codes) == 20
    for code in codes:
        assert len(code) == 12 and set(code) <= ALPHABET


def test_lifecycle_to_completed(orders_api, branch):
    start = last_position(orders_api)
    order = place(orders_api, contact_id=str(uuid.uuid4()))
    steps = [(CONFIRMED, "by-id"), (IN_PREPARATION, "by-ext"), (READY, "by-id"),
             (DELIVERED, "by-ext"), (COMPLETED, "by-id")]
    metas = []
    for n, (to, how) in enumerate(steps, start=2):
        meta = orders_api.meta()
        metas.append(meta)
        reply = (orders_api.change(to, order_id=order.id, note="step %d" % n, meta=meta)
                 if how == "by-id" else
                 orders_api.change(to, external_id=order.external_id, note="step %d" % n,
                                   meta=meta))
        changed = orders_api.must(reply).order
        assert changed.status == to and changed.version == n
        assert changed.id == order.id
    assert [(h.from_status, h.to_status) for h in changed.history] == [
        (0, PLACED), (PLACED, CONFIRMED), (CONFIRMED, IN_PREPARATION), (IN_PREPARATION, READY),
        (READY, DELIVERED), (DELIVERED, COMPLETED)]
    for n, h in enumerate(changed.history[1:], start=2):
        assert h.actor == "e2e-till" and h.branch == branch and h.note == "step %d" % n
        assert h.at_unix_ms >= changed.created_unix_ms
    assert changed.updated_unix_ms >= changed.created_unix_ms

    events = events_after(orders_api, start, [m.request_id for m in metas])
    mine = events_of(events, order.id)
    assert [t for t, _, _ in mine] == ["orders.OrderPlaced"] + ["orders.OrderStatusChanged"] * 5 + [
        "orders.OrderCompleted"]
    placed = mine[0][1]
    assert placed.contact_id == order.contact_id and placed.branch == branch
    assert placed.total.minor_units == order.total.minor_units
    changes = [(p.from_status, p.to_status) for t, p, _ in mine if t.endswith("StatusChanged")]
    assert changes == [(h.from_status, h.to_status) for h in changed.history[1:]]
    completed = mine[-1][1]
    assert completed.total.minor_units == order.total.minor_units
    assert completed.total.currency == "EUR"
    assert completed.completed_unix_ms == changed.history[-1].at_unix_ms
    assert mine[-1][2].request_id == metas[-1].request_id


def test_shipping_path(orders_api):
    order = place(orders_api)
    for to in (READY, SHIPPED, DELIVERED, COMPLETED):
        order = orders_api.must(orders_api.change(to, order_id=order.id)).order
    assert order.status == COMPLETED and order.version == 5


def test_cancel_needs_a_reason_and_is_final(orders_api):
    order = place(orders_api)
    reply = orders_api.change(CANCELLED, order_id=order.id)
    assert reply.code == "INVALID_ARGUMENT" and "reason" in reply.message, reply
    cancelled = orders_api.must(
        orders_api.change(CANCELLED, order_id=order.id, reason="customer changed their mind")
    ).order
    assert cancelled.status == CANCELLED and cancelled.version == 2
    assert cancelled.history[-1].reason == "customer changed their mind"
    for to in (PLACED, CONFIRMED, READY, COMPLETED, DELAYED, CANCELLED):
        reply = orders_api.change(to, order_id=order.id, reason="again",
                                  promised_by_unix_ms=now_ms() + HOUR_MS)
        assert reply.code == "FAILED_PRECONDITION", (to, reply)
        assert "CANCELLED" in reply.message and status_name(to) in reply.message, reply
    assert orders_api.must(orders_api.get(order.id)).order.version == 2


@pytest.mark.parametrize("path, to", [
    ((), SHIPPED),
    ((), DELIVERED),
    ((), COMPLETED),
    ((), PLACED),
    ((CONFIRMED,), CONFIRMED),
    ((READY,), CONFIRMED),
    ((READY,), IN_PREPARATION),
    ((READY,), DELAYED),
    ((READY, SHIPPED), READY),
    ((READY, SHIPPED), COMPLETED),
    ((READY, DELIVERED), CANCELLED),
    ((READY, COMPLETED), CANCELLED),
])
def test_illegal_transitions_refused(orders_api, path, to):
    order = place(orders_api)
    for step in path:
        order = orders_api.must(orders_api.change(step, order_id=order.id)).order
    reply = orders_api.change(to, order_id=order.id, reason="because",
                              promised_by_unix_ms=now_ms() + HOUR_MS)
    assert reply.code == "FAILED_PRECONDITION", reply
    assert status_name(order.status) in reply.message and status_name(to) in reply.message
    # The refusal carries the order as it is, unchanged
    assert reply.response.order.status == order.status
    after = orders_api.must(orders_api.get(order.id)).order
    assert after.version == order.version and after.status == order.status
    assert len(after.history) == len(order.history)


def test_delayed_needs_a_reason_and_a_future_time(orders_api, branch):
    start = last_position(orders_api)
    order = place(orders_api, promised_by_unix_ms=now_ms() + HOUR_MS)
    later = now_ms() + 3 * HOUR_MS
    reply = orders_api.change(DELAYED, order_id=order.id, promised_by_unix_ms=later)
    assert reply.code == "INVALID_ARGUMENT" and "reason" in reply.message, reply
    reply = orders_api.change(DELAYED, order_id=order.id, reason="oven broke")
    assert reply.code == "INVALID_ARGUMENT" and "promised" in reply.message, reply
    reply = orders_api.change(DELAYED, order_id=order.id, reason="oven broke",
                              promised_by_unix_ms=now_ms() - 60000)
    assert reply.code == "INVALID_ARGUMENT" and "future" in reply.message, reply
    assert orders_api.must(orders_api.get(order.id)).order.version == 1

    meta = orders_api.meta()
    delayed = orders_api.must(orders_api.change(
        DELAYED, external_id=order.external_id, reason="oven broke", promised_by_unix_ms=later,
        meta=meta)).order
    assert delayed.status == DELAYED and delayed.promised_by_unix_ms == later
    entry = delayed.history[-1]
    assert entry.reason == "oven broke" and entry.promised_by_unix_ms == later
    # Delayed again, and then on with the order
    even_later = later + HOUR_MS
    delayed = orders_api.must(orders_api.change(
        DELAYED, order_id=order.id, reason="still broken", promised_by_unix_ms=even_later)).order
    assert delayed.promised_by_unix_ms == even_later and delayed.version == 3
    ready = orders_api.must(orders_api.change(READY, order_id=order.id)).order
    assert ready.promised_by_unix_ms == even_later

    events = events_after(orders_api, start, [meta.request_id])
    told = events_of(events, order.id, "orders.OrderDelayed")
    assert [(p.reason, p.promised_by_unix_ms) for _, p, _ in told][:1] == [("oven broke", later)]
    assert told[0][1].branch == branch


def test_tracking_shows_status_history_promise_and_first_name_only(orders_api, fresh):
    contact = str(uuid.uuid4())
    promised = now_ms() + HOUR_MS
    a = place(orders_api, contact_id=contact, customer_first_name="Olga",
              promised_by_unix_ms=promised,
              items=[orders_api.item("sku-7", "Cake", 1, 2500)])
    orders_api.must(orders_api.change(CONFIRMED, order_id=a.id, actor="secret-actor-x",
                                      note="secret-note-y"))
    orders_api.must(orders_api.change(DELAYED, order_id=a.id, actor="secret-actor-x",
                                      note="secret-note-z", reason="flour ran out",
                                      promised_by_unix_ms=promised + HOUR_MS))
    b = place(orders_api, customer_first_name="Boris")

    reply = orders_api.track(a.tracking_code)
    tracked = orders_api.must(reply)
    assert tracked.status == DELAYED
    assert [(h.status, h.reason) for h in tracked.history] == [
        (PLACED, ""), (CONFIRMED, ""), (DELAYED, "flour ran out")]
    assert all(h.at_unix_ms > 0 for h in tracked.history)
    assert tracked.promised_by_unix_ms == promised + HOUR_MS
    assert not tracked.late
    assert tracked.customer_first_name == "Olga"
    assert tracked.branch == a.branch
    assert [(i.name, i.quantity) for i in tracked.items] == [("Cake", 1)]
    assert tracked.total.minor_units == 2500
    # Only the fields of TrackOrderResponse, and none of the private data in the bytes
    fields = {f.name for f, _ in tracked.ListFields()}
    assert fields <= {"status", "history", "promised_by_unix_ms", "late",
                      "customer_first_name", "branch", "items", "total"}, fields
    for private in (a.id, contact, "secret-actor-x", "secret-note-y", "secret-note-z",
                    a.external_id, a.tracking_code, b.id, "Boris"):
        assert private.encode() not in reply.raw, private

    # Another order's code shows that order only
    other = orders_api.must(orders_api.track(b.tracking_code))
    assert other.customer_first_name == "Boris" and other.status == PLACED
    assert len(other.history) == 1 and b"Olga" not in orders_api.track(b.tracking_code).raw

    # As a customer types it
    typed = a.tracking_code.lower()
    typed = typed[:4] + "-" + typed[4:8] + " " + typed[8:]
    assert orders_api.must(orders_api.track(typed)).customer_first_name == "Olga"


@pytest.mark.parametrize("code", ["", "ABC", "ABCDEFGHJKMN2", "ABCDEFGHJKM0", "ABCDEFGHJKMO",
                                  "ABCDEFGHJKM!", "ABCDEFGHJKMI"])
def test_malformed_tracking_code_refused(orders_api, code):
    reply = orders_api.track(code)
    assert reply.code == "INVALID_ARGUMENT", reply


def test_unknown_tracking_code_not_found(orders_api):
    reply = orders_api.track("ZZZZ2222ZZZZ")
    assert reply.code == "NOT_FOUND", reply
    assert len(reply.raw) == 0


def test_list_by_contact_newest_first_with_paging(orders_api):
    contact = str(uuid.uuid4())
    placed = [place(orders_api, contact_id=contact) for _ in range(5)]
    place(orders_api, contact_id=str(uuid.uuid4()))  # someone else's
    got, token, pages = [], "", 0
    while True:
        page = orders_api.must(orders_api.list(contact_id=contact, page_size=2, page_token=token))
        pages += 1
        assert len(page.orders) <= 2
        got += list(page.orders)
        token = page.page.next_page_token
        if not token:
            break
    assert pages == 3
    assert [o.id for o in got] == [o.id for o in reversed(placed)]
    assert all(o.contact_id == contact for o in got)
    # Changes since do not change the order of the list
    orders_api.must(orders_api.change(READY, order_id=placed[0].id))
    everything = orders_api.must(orders_api.list(contact_id=contact)).orders
    assert [o.id for o in everything] == [o.id for o in reversed(placed)]
    assert everything[-1].status == READY
    assert len(orders_api.must(orders_api.list(contact_id=str(uuid.uuid4()))).orders) == 0


def test_list_by_branch_and_day(orders_api, branch):
    placed = [place(orders_api) for _ in range(4)]
    days = {datetime.datetime.fromtimestamp(o.created_unix_ms / 1000, datetime.timezone.utc)
            .strftime("%Y-%m-%d") for o in placed}
    got = []
    for day in sorted(days):
        token = ""
        while True:
            page = orders_api.must(orders_api.list(day=day, page_size=3, page_token=token))
            got += list(page.orders)
            token = page.page.next_page_token
            if not token:
                break
    assert [o.id for o in got] == [o.id for o in placed]
    # By the branch given in the request, from a caller of another branch
    other = orders_api.list(branch=branch, day=sorted(days)[0], meta=orders_api.meta(
        branch="somewhere-else"))
    assert placed[0].id in [o.id for o in orders_api.must(other).orders]
    assert len(orders_api.must(orders_api.list(day="2001-01-01")).orders) == 0


@pytest.mark.parametrize("fields", [
    dict(day="22.11.2026"),
    dict(day="2026-02-30"),
    dict(day=""),
    dict(contact_id="not-an-id"),
    dict(contact_id="11111111-1111-4111-8111-111111111111", day="2026-11-22"),
    dict(day="2026-11-22", page_token="garbage"),
    dict(day="2026-11-22", page_token="12.34"),
])
def test_list_bad_requests_refused(orders_api, fields):
    reply = orders_api.list(**fields)
    assert reply.code == "INVALID_ARGUMENT", reply


def test_resends_are_deduplicated(orders_api, maybe_pg):
    start = last_position(orders_api)
    meta = orders_api.meta()
    order_msg = orders_api.new_order()
    first = orders_api.place(order_msg, meta=meta)
    assert first.code == "OK" and not first.replayed
    again = orders_api.place(order_msg, meta=meta)
    assert again.code == "OK" and again.replayed, again
    assert again.response == first.response
    change_meta = orders_api.meta()
    order_id = first.response.order.id
    c1 = orders_api.change(CONFIRMED, order_id=order_id, meta=change_meta)
    c2 = orders_api.change(CONFIRMED, order_id=order_id, meta=change_meta)
    assert c1.code == "OK" and c2.code == "OK" and c2.replayed
    assert c2.response == c1.response
    assert orders_api.must(orders_api.get(order_id)).order.version == 2
    # The same request id with another request is refused
    other = orders_api.change(READY, order_id=order_id, meta=change_meta)
    assert other.code == "INVALID_ARGUMENT", other

    events = events_after(orders_api, start, [meta.request_id, change_meta.request_id],
                          settle_s=0.5)
    assert [e.topic for e in events if e.request_id == meta.request_id] == ["orders.OrderPlaced"]
    assert [e.topic for e in events if e.request_id == change_meta.request_id] == [
        "orders.OrderStatusChanged"]
    if maybe_pg:
        assert maybe_pg.scalar("SELECT count(*) FROM orders.orders WHERE external_id = '%s'"
                               % order_msg.external_id) == "1"


def test_same_external_id_with_another_request_already_exists(orders_api, branch):
    order = place(orders_api)
    again = orders_api.new_order(external_id=order.external_id,
                                 items=[orders_api.item(quantity=7)])
    reply = orders_api.place(again)
    assert reply.code == "ALREADY_EXISTS", reply
    assert reply.response.order.id == order.id
    assert reply.response.order.total.minor_units == order.total.minor_units
    assert order.external_id in reply.message
    # A purchase with that number too; another branch may use the same number
    assert orders_api.record_purchase(again).code == "ALREADY_EXISTS"
    elsewhere = orders_api.place(again, meta=orders_api.meta(branch=branch + "-b"))
    assert elsewhere.code == "OK" and elsewhere.response.order.id != order.id


def test_status_change_arriving_before_the_order(orders_api, branch, maybe_pg):
    order_msg = orders_api.new_order()
    meta = orders_api.meta()
    early = orders_api.change(CONFIRMED, external_id=order_msg.external_id, meta=meta)
    assert early.code == "UNAVAILABLE", early
    assert "not seen yet" in early.message and order_msg.external_id in early.message
    if maybe_pg:
        assert maybe_pg.scalar("SELECT count(*) FROM orders.crm_idempotency WHERE request_id = "
                               "'%s'" % meta.request_id) == "0"
    # Still not there: the same answer, still not stored
    assert orders_api.change(CONFIRMED, external_id=order_msg.external_id,
                             meta=meta).code == "UNAVAILABLE"
    place(orders_api, order=order_msg)
    late = orders_api.change(CONFIRMED, external_id=order_msg.external_id, meta=meta)
    assert late.code == "OK" and not late.replayed, late
    assert late.response.order.status == CONFIRMED
    replay = orders_api.change(CONFIRMED, external_id=order_msg.external_id, meta=meta)
    assert replay.code == "OK" and replay.replayed
    # By the branch's number only within the branch that sent it
    elsewhere = orders_api.change(READY, external_id=order_msg.external_id,
                                  meta=orders_api.meta(branch=branch + "-other"))
    assert elsewhere.code == "UNAVAILABLE"


def test_unknown_order_id_not_found(orders_api):
    unknown = str(uuid.uuid4())
    assert orders_api.get(unknown).code == "NOT_FOUND"
    assert orders_api.change(CONFIRMED, order_id=unknown).code == "NOT_FOUND"


def test_sweep_marks_late_once_per_promise(orders_api):
    start = last_position(orders_api)
    base = now_ms()
    due = place(orders_api, promised_by_unix_ms=base + HOUR_MS)
    ready = place(orders_api, promised_by_unix_ms=base + HOUR_MS)
    orders_api.must(orders_api.change(READY, order_id=ready.id))
    unpromised = place(orders_api)

    meta = orders_api.meta()
    swept = orders_api.must(orders_api.sweep_late(as_of_unix_ms=base + 2 * HOUR_MS, meta=meta))
    assert swept.marked_late >= 1
    late = orders_api.must(orders_api.get(due.id)).order
    assert late.late and late.version == 2 and late.status == PLACED
    assert not orders_api.must(orders_api.get(ready.id)).order.late
    assert not orders_api.must(orders_api.get(unpromised.id)).order.late
    assert orders_api.must(orders_api.track(due.tracking_code)).late
    # A resend answers the same; a new sweep marks nothing twice
    again = orders_api.sweep_late(as_of_unix_ms=base + 2 * HOUR_MS, meta=meta)
    assert again.replayed and again.response.marked_late == swept.marked_late
    orders_api.must(orders_api.sweep_late(as_of_unix_ms=base + 2 * HOUR_MS))
    assert orders_api.must(orders_api.get(due.id)).order.version == 2

    # A delay with a new promise clears the mark; the new promise can be missed in turn
    delayed = orders_api.must(orders_api.change(
        DELAYED, order_id=due.id, reason="driver ill", promised_by_unix_ms=base + 3 * HOUR_MS)).order
    assert not delayed.late
    orders_api.must(orders_api.sweep_late(as_of_unix_ms=base + 2 * HOUR_MS))
    assert not orders_api.must(orders_api.get(due.id)).order.late
    last = orders_api.meta()
    orders_api.must(orders_api.sweep_late(as_of_unix_ms=base + 4 * HOUR_MS, meta=last))
    assert orders_api.must(orders_api.get(due.id)).order.late

    events = events_after(orders_api, start, [meta.request_id, last.request_id], settle_s=0.5)
    told = events_of(events, due.id, "orders.OrderLate")
    assert [p.promised_by_unix_ms for _, p, _ in told] == [base + HOUR_MS, base + 3 * HOUR_MS]
    assert told[0][2].request_id == meta.request_id
    assert told[1][2].request_id == last.request_id
    assert events_of(events, ready.id, "orders.OrderLate") == []


def test_sweep_refuses_a_negative_clock(orders_api):
    assert orders_api.sweep_late(as_of_unix_ms=-1).code == "INVALID_ARGUMENT"


def test_the_service_marks_late_orders_by_itself(orders_api):
    start = last_position(orders_api)
    order = place(orders_api, promised_by_unix_ms=now_ms() + 1500)
    assert not order.late
    deadline = time.monotonic() + 45  # CRM_ORDERS_SWEEP_S is 1 in the harness, 30 by default
    while time.monotonic() < deadline:
        if orders_api.must(orders_api.get(order.id)).order.late:
            break
        time.sleep(0.2)
    assert orders_api.must(orders_api.get(order.id)).order.late
    events = events_after(orders_api, start, timeout_s=0)
    deadline = time.monotonic() + 5
    while not events_of(events, order.id, "orders.OrderLate") and time.monotonic() < deadline:
        time.sleep(0.1)
        events = events_after(orders_api, start, timeout_s=0)
    told = events_of(events, order.id, "orders.OrderLate")
    assert len(told) == 1
    assert told[0][2].request_id.startswith("sweep-")


def test_record_purchase_is_completed_at_once(orders_api, branch):
    start = last_position(orders_api)
    contact = str(uuid.uuid4())
    meta = orders_api.meta()
    sale = orders_api.must(orders_api.record_purchase(
        contact_id=contact, items=[orders_api.item(quantity=3, unit_price_minor=400)],
        meta=meta)).order
    assert sale.status == COMPLETED and sale.version == 1
    assert [(h.from_status, h.to_status) for h in sale.history] == [(0, PLACED),
                                                                   (PLACED, COMPLETED)]
    assert sale.total.minor_units == 1200
    # Saying COMPLETED is fine too
    said = orders_api.new_order(status=COMPLETED)
    assert orders_api.must(orders_api.record_purchase(said)).order.status == COMPLETED
    reply = orders_api.change(CANCELLED, order_id=sale.id, reason="refund")
    assert reply.code == "FAILED_PRECONDITION"

    events = events_after(orders_api, start, [meta.request_id], settle_s=0.3)
    mine = [e for e in events if e.request_id == meta.request_id]
    assert [e.topic for e in mine] == ["orders.OrderCompleted"]
    completed = payload_of(mine[0])
    assert completed.order_id == sale.id and completed.contact_id == contact
    assert completed.branch == branch
    assert completed.total.minor_units == 1200 and completed.total.currency == "EUR"
    assert completed.completed_unix_ms == sale.history[-1].at_unix_ms


def test_events_are_gapless_and_decodable(orders_api):
    start = last_position(orders_api)
    metas = [orders_api.meta() for _ in range(4)]
    order = orders_api.must(orders_api.place(meta=metas[0], promised_by_unix_ms=now_ms() + 60000,
                                             contact_id=str(uuid.uuid4()))).order
    orders_api.must(orders_api.change(DELAYED, order_id=order.id, reason="r",
                                      promised_by_unix_ms=now_ms() + HOUR_MS, meta=metas[1]))
    orders_api.must(orders_api.change(READY, order_id=order.id, meta=metas[2]))
    orders_api.must(orders_api.record_purchase(meta=metas[3]))
    events = events_after(orders_api, start, [m.request_id for m in metas])
    positions = [e.position for e in events]
    assert positions == list(range(start + 1, start + 1 + len(events)))
    for e in events:
        assert e.topic.startswith("orders.") and e.created_unix_ms > 0
        payload_of(e)
    topics = [(e.request_id, e.topic) for e in events if e.request_id in
              {m.request_id for m in metas}]
    assert [t for _, t in topics] == [
        "orders.OrderPlaced", "orders.OrderStatusChanged", "orders.OrderDelayed",
        "orders.OrderStatusChanged", "orders.OrderCompleted"]


def _items(*pairs):
    return [orders_pb2.OrderItem(product_id="p%d" % i, quantity=q, unit_price_minor=p)
            for i, (q, p) in enumerate(pairs)]


@pytest.mark.parametrize("what, fields", [
    ("lowercase currency", dict(currency="eur")),
    ("no currency", dict(currency="")),
    ("long currency", dict(currency="EURO")),
    ("zero items", dict(items=[])),
    ("negative price", dict(items=_items((1, -5)))),
    ("quantity 0", dict(items=_items((0, 100)))),
    ("quantity too big", dict(items=_items((1000001, 1)))),
    ("overflowing total", dict(items=_items((1000000, 2 ** 62)))),
    ("overflowing sum", dict(items=_items((1, 2 ** 63 - 1), (1, 1)))),
    ("201 items", dict(items=_items(*[(1, 1)] * 201))),
    ("nameless item", dict(items=[orders_pb2.OrderItem(quantity=1, unit_price_minor=1)])),
    ("malformed contact id", dict(contact_id="42")),
    ("id set by caller", dict(id=str(uuid.uuid4()))),
    ("tracking code set by caller", dict(tracking_code="ABCDEFGHJKMN")),
    ("status set by caller", dict(status=READY)),
    ("version set by caller", dict(version=3)),
    ("wrong total", dict(total=common_pb2.Money(minor_units=1, currency="EUR"))),
    ("negative promise", dict(promised_by_unix_ms=-1)),
    ("control character", dict(customer_first_name="An\x01na")),
    ("no external id", dict(external_id="")),
])
def test_bad_orders_refused_and_nothing_stored(orders_api, maybe_pg, what, fields):
    fields = dict(fields)  # the parameter is shared by reruns
    external_id = fields.pop("external_id", "bad-" + uuid.uuid4().hex[:12])
    order = orders_api.new_order(**fields)
    order.external_id = external_id
    meta = orders_api.meta()
    for method in ("PlaceOrder", "RecordPurchase"):
        if method == "RecordPurchase" and what == "status set by caller":
            order.status = CONFIRMED
        reply = (orders_api.place(order, meta=meta) if method == "PlaceOrder"
                 else orders_api.record_purchase(order, meta=orders_api.meta()))
        assert reply.code == "INVALID_ARGUMENT", (what, method, reply)
        assert reply.message
    if maybe_pg and external_id:
        assert maybe_pg.scalar("SELECT count(*) FROM orders.orders WHERE external_id = '%s'"
                               % external_id) == "0"
        assert maybe_pg.scalar("SELECT count(*) FROM orders.crm_idempotency WHERE request_id = "
                               "'%s'" % meta.request_id) == "0"
    # Nothing was claimed: the same request id serves a good request afterwards
    good = orders_api.place(orders_api.new_order(), meta=meta)
    assert good.code == "OK", good


def test_no_order_refused(orders_api):
    assert orders_api.call("PlaceOrder", orders_pb2.PlaceOrderRequest()).code == "INVALID_ARGUMENT"
    assert orders_api.call("RecordPurchase",
                           orders_pb2.RecordPurchaseRequest()).code == "INVALID_ARGUMENT"


def test_bad_status_changes_refused(orders_api):
    order = place(orders_api)
    cases = [
        dict(to=42, order_id=order.id),
        dict(to=0, order_id=order.id),
        dict(to=CONFIRMED),
        dict(to=CONFIRMED, order_id=order.id, external_id=order.external_id),
        dict(to=CONFIRMED, order_id="not-an-id"),
        dict(to=CONFIRMED, order_id=order.id, promised_by_unix_ms=-3),
        dict(to=CONFIRMED, order_id=order.id, note="x" * 1001),
        dict(to=CONFIRMED, order_id=order.id, actor="a\nb"),
    ]
    for case in cases:
        reply = orders_api.change(**case)
        assert reply.code == "INVALID_ARGUMENT", (case, reply)
    # By external id needs the branch it belongs to
    reply = orders_api.change(CONFIRMED, external_id=order.external_id,
                              meta=orders_api.meta(branch=""))
    assert reply.code == "INVALID_ARGUMENT", reply
    assert orders_api.must(orders_api.get(order.id)).order.version == 1


def test_malformed_order_ids_refused(orders_api):
    for bad in ("", "42", "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz", str(uuid.uuid4()) + "0"):
        assert orders_api.get(bad).code == "INVALID_ARGUMENT", bad


def test_no_branch_refused(orders_api):
    reply = orders_api.place(meta=orders_api.meta(branch=""))
    assert reply.code == "INVALID_ARGUMENT" and "branch" in reply.message


def test_notes_and_reasons_may_span_lines(orders_api):
    order = place(orders_api)
    changed = orders_api.must(orders_api.change(
        CANCELLED, order_id=order.id, note="called twice\nno answer",
        reason="customer away\tuntil May")).order
    assert changed.history[-1].note == "called twice\nno answer"
    assert orders_api.change(CONFIRMED, order_id=place(orders_api).id,
                             actor="two\nlines").code == "INVALID_ARGUMENT"
