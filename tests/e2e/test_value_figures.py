"""test_value_figures.py - contacts keeps each customer's value figures from the orders
service's event log: purchases placed and completed through orders show in the contact within
seconds, once each, and equal what the orders themselves add up to."""

import datetime
import os
import subprocess
import time
import uuid

import pytest
from crm.v1 import common_pb2, orders_pb2

from conftest import EXTERNAL

WAIT_S = 10.0  # The consumer is woken live; its poll runs every second anyway


@pytest.fixture(autouse=True)
def orders_running(client):
    if client.mmi_service("orders") != "200":
        pytest.skip("the orders service does not answer mmi.service: no crm-orders running")


class OrdersApi:
    """The calls of the orders service this test makes, as a branch system would."""

    def __init__(self, client, branch):
        self.client = client
        self.branch = branch

    def call(self, method, request, meta=None):
        if meta is None:
            meta = self.client.meta(branch=self.branch)
        status, raw = self.client.call("orders", method, request, meta)
        assert status.code == 0, (method, status)
        response = getattr(orders_pb2, method + "Response")()
        response.ParseFromString(raw)
        return response

    def order(self, contact_id, items, currency="EUR"):
        return orders_pb2.Order(
            branch=self.branch,
            contact_id=contact_id,
            external_id="vf-" + uuid.uuid4().hex[:12],
            currency=currency,
            items=[orders_pb2.OrderItem(name=name, quantity=q, unit_price_minor=p)
                   for name, q, p in items],
        )

    def place(self, contact_id, items, currency="EUR"):
        request = orders_pb2.PlaceOrderRequest(order=self.order(contact_id, items, currency))
        return self.call("PlaceOrder", request).order

    def purchase(self, contact_id, items, currency="EUR", meta=None):
        request = orders_pb2.RecordPurchaseRequest(order=self.order(contact_id, items, currency))
        return self.call("RecordPurchase", request, meta).order

    def change(self, order_id, to, reason=""):
        request = orders_pb2.ChangeStatusRequest(order_id=order_id, to=to, actor="e2e-staff",
                                                 reason=reason)
        return self.call("ChangeStatus", request).order

    def complete(self, order_id):
        self.change(order_id, orders_pb2.ORDER_STATUS_READY)
        return self.change(order_id, orders_pb2.ORDER_STATUS_COMPLETED)

    def of_contact(self, contact_id):
        """Every order of a contact, through ListOrders' pages."""
        orders, token = [], ""
        while True:
            response = self.call("ListOrders", orders_pb2.ListOrdersRequest(
                contact_id=contact_id, page=common_pb2.PageRequest(page_size=100,
                                                                   page_token=token)))
            orders += list(response.orders)
            token = response.page.next_page_token
            if not token:
                return orders


def completed_at(order):
    """When the order was completed, from its history."""
    times = [c.at_unix_ms for c in order.history if c.to_status == orders_pb2.ORDER_STATUS_COMPLETED]
    assert len(times) == 1, order.history
    return times[0]


def expected_figures(orders_api, contact_id):
    """The value figures computed directly from the contact's orders: completed ones count."""
    done = [o for o in orders_api.of_contact(contact_id)
            if o.status == orders_pb2.ORDER_STATUS_COMPLETED]
    if not done:
        return None
    first = min(completed_at(o) for o in done)
    first_day = datetime.datetime.fromtimestamp(first / 1000, datetime.timezone.utc).date()
    return dict(
        first_deal=(first_day.year, first_day.month, first_day.day),
        last_purchase_unix_ms=max(completed_at(o) for o in done),
        purchase_count=len(done),
        total_spend=(sum(o.total.minor_units for o in done), done[0].currency),
    )


def figures_of(api, contact_id):
    value = api.must(api.get(contact_id)).contact.value
    return dict(
        first_deal=(value.first_deal.year, value.first_deal.month, value.first_deal.day),
        last_purchase_unix_ms=value.last_purchase_unix_ms,
        purchase_count=value.purchase_count,
        total_spend=(value.total_spend.minor_units, value.total_spend.currency),
    ), value.segment


def wait_figures(api, contact_id, want, timeout_s=WAIT_S):
    """The contact's figures once they equal want, or the last ones seen after timeout_s."""
    end = time.monotonic() + timeout_s
    while True:
        figures, segment = figures_of(api, contact_id)
        if figures == want or time.monotonic() >= end:
            return figures, segment
        time.sleep(0.05)


def new_contact(api, fresh):
    return api.must(api.create(given_name="Valued", family_name=fresh.name("Customer"))).contact


def test_purchases_make_the_value_figures(api, client, fresh, branch):
    orders = OrdersApi(client, branch)
    contact = new_contact(api, fresh)
    figures, segment = figures_of(api, contact.id)
    assert figures["purchase_count"] == 0 and segment == "none"

    # An order placed and completed; a sale at the till; one cancelled and one still open,
    # which are no purchases
    placed = orders.place(contact.id, [("Coffee beans", 2, 1250), ("Filter", 1, 399)])
    start = time.monotonic()
    orders.complete(placed.id)
    want = expected_figures(orders, contact.id)
    assert want["purchase_count"] == 1 and want["total_spend"] == (2899, "EUR")
    figures, segment = wait_figures(api, contact.id, want)
    print("value figures updated %.0f ms after the order was completed"
          % ((time.monotonic() - start) * 1000))
    assert figures == want
    assert segment == "new"

    orders.purchase(contact.id, [("Croissant", 3, 180)])
    cancelled = orders.place(contact.id, [("Cake", 1, 2500)])
    orders.change(cancelled.id, orders_pb2.ORDER_STATUS_CANCELLED, reason="changed their mind")
    orders.place(contact.id, [("Bread", 1, 300)])
    want = expected_figures(orders, contact.id)
    assert want["purchase_count"] == 2 and want["total_spend"] == (2899 + 540, "EUR")
    figures, segment = wait_figures(api, contact.id, want)
    assert figures == want
    assert segment == "active"

    # Two more make the customer loyal; the figures keep equal to the orders' own
    for _ in range(2):
        orders.purchase(contact.id, [("Tea", 1, 450)])
    want = expected_figures(orders, contact.id)
    figures, segment = wait_figures(api, contact.id, want)
    assert figures == want
    assert want["purchase_count"] == 4 and segment == "loyal"


def test_resent_purchase_counts_once(api, client, fresh, branch):
    orders = OrdersApi(client, branch)
    contact = new_contact(api, fresh)
    meta = client.meta(branch=branch)
    request = orders_pb2.RecordPurchaseRequest(order=orders.order(contact.id, [("Lamp", 1, 4900)]))
    orders.call("RecordPurchase", request, meta)
    # The till did not get the acknowledgement and sends the same event again
    status, _ = client.call("orders", "RecordPurchase", request, meta)
    assert status.code == 0 and status.replayed, status

    want = expected_figures(orders, contact.id)
    assert want["purchase_count"] == 1
    figures, _ = wait_figures(api, contact.id, want)
    assert figures == want
    # A while later still once
    time.sleep(1.5)
    figures, _ = figures_of(api, contact.id)
    assert figures == want


def test_merged_erased_and_unknown_contacts(api, client, fresh, branch):
    orders = OrdersApi(client, branch)
    survivor = new_contact(api, fresh)
    merged = new_contact(api, fresh)
    orders.purchase(survivor.id, [("Vase", 1, 1000)])
    orders.purchase(merged.id, [("Plate", 2, 700)])
    want_survivor = expected_figures(orders, survivor.id)
    want_merged = expected_figures(orders, merged.id)
    assert wait_figures(api, survivor.id, want_survivor)[0] == want_survivor
    assert wait_figures(api, merged.id, want_merged)[0] == want_merged

    # Merged: the figures add up, and later purchases under the old id count for the survivor
    api.must(api.merge(survivor.id, merged.id, reason="same person"))
    orders.purchase(merged.id, [("Cup", 1, 350)])
    done = [o for o in orders.of_contact(survivor.id) + orders.of_contact(merged.id)
            if o.status == orders_pb2.ORDER_STATUS_COMPLETED]
    want = dict(
        first_deal=min(want_survivor["first_deal"], want_merged["first_deal"]),
        last_purchase_unix_ms=max(completed_at(o) for o in done),
        purchase_count=3,
        total_spend=(1000 + 1400 + 350, "EUR"),
    )
    figures, _ = wait_figures(api, survivor.id, want)
    assert figures == want

    # Erased: the figures are gone with the rest, and stay gone
    erased = new_contact(api, fresh)
    orders.purchase(erased.id, [("Book", 1, 1500)])
    want_erased = expected_figures(orders, erased.id)
    assert wait_figures(api, erased.id, want_erased)[0] == want_erased
    api.must(api.erase(erased.id))
    orders.purchase(erased.id, [("Book", 1, 1500)])
    # An unknown contact and an anonymous sale hold nothing up either
    orders.purchase(str(uuid.uuid4()), [("Pen", 1, 100)])
    orders.purchase("", [("Pen", 1, 100)])
    # A purchase after them all still arrives
    marker = new_contact(api, fresh)
    orders.purchase(marker.id, [("Marker", 1, 200)])
    want_marker = expected_figures(orders, marker.id)
    assert wait_figures(api, marker.id, want_marker)[0] == want_marker
    figures, segment = figures_of(api, erased.id)
    assert figures["purchase_count"] == 0 and segment == "none"


def test_a_spend_out_of_range_stops_nothing(api, client, fresh, branch):
    # Each total fits in 64 bits, but the two together do not: the second amount is left out
    # (the purchase still counts), and the orders events after it are applied as before
    orders = OrdersApi(client, branch)
    big = new_contact(api, fresh)
    huge = 9_000_000_000_000_000_000
    orders.purchase(big.id, [("Island", 1, huge)])
    orders.purchase(big.id, [("Another island", 1, huge)])
    later = new_contact(api, fresh)
    orders.purchase(later.id, [("Postcard", 1, 150)])
    want = expected_figures(orders, later.id)
    figures, _ = wait_figures(api, later.id, want)
    assert figures == want, "the events after the out-of-range amount were not applied"
    figures, _ = figures_of(api, big.id)
    assert figures["purchase_count"] == 2
    assert figures["total_spend"] == (huge, "EUR")


@pytest.mark.skipif(EXTERNAL, reason="starts a contacts instance of its own")
def test_another_orders_source_is_refused():
    # The figures' position is kept under "orders": a service started with another source
    # name would read one position and move another, so it does not start
    env = dict(os.environ, CRM_CONTACTS_DSN=os.environ["CRM_E2E_CONTACTS_DSN"],
               CRM_CONTACTS_ORDERS_SOURCE="shop-orders", CRM_LOG_FORMAT="text")
    done = subprocess.run([os.path.join(os.environ.get("CRM_E2E_BIN", "build/bin"),
                                        "crm-contacts")],
                          env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert "CRM_CONTACTS_ORDERS_SOURCE" in done.stdout + done.stderr
