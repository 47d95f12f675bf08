"""test_publish.py - crmctl publish, the branch publisher: a file of branch events sent at least
once, the same file sent again changing nothing, and a file with bad lines, each reported with
its line number while the rest is still sent."""

import json
import os
import subprocess
import uuid

import pytest
from crm.v1 import orders_pb2

CRMCTL = os.path.join(os.environ.get("CRM_E2E_BIN", "build/bin"), "crmctl")

PLACED = orders_pb2.ORDER_STATUS_PLACED
CONFIRMED = orders_pb2.ORDER_STATUS_CONFIRMED
COMPLETED = orders_pb2.ORDER_STATUS_COMPLETED


def publish(path, *options, stdin=None, timeout=60):
    env = dict(os.environ, CRM_BROKER_ENDPOINT=os.environ["CRM_E2E_BROKER"], CRM_TIMEOUT_MS="3000")
    return subprocess.run(
        [CRMCTL, "publish", *options, path],
        input=stdin, env=env, capture_output=True, text=True, timeout=timeout,
    )


def event(method, request_id, branch, request):
    return json.dumps({"service": "orders", "method": method, "requestId": request_id,
                       "branch": branch, "request": request})


def order(external_id, contact_id, **extra):
    body = {
        "externalId": external_id,
        "contactId": contact_id,
        "items": [{"productId": "sku-7", "name": "Coffee beans", "quantity": "2",
                   "unitPriceMinor": 990}],
        "currency": "EUR",
        "customerFirstName": "Olga",
    }
    body.update(extra)
    return {"order": body}


def write(tmp_path, lines, name="events.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def orders_of(orders_api, contact_id):
    """The customer's orders by external id, as the service shows them."""
    reply = orders_api.list(contact_id=contact_id, page_size=100)
    assert reply.code == "OK", reply
    return {o.external_id: o for o in reply.response.orders}


@pytest.fixture(autouse=True)
def orders_running(client):
    if client.mmi_service("orders") != "200":
        pytest.skip("no orders instance behind the broker")


def test_publish_then_the_same_file_again_changes_nothing(orders_api, branch, tmp_path):
    contact = str(uuid.uuid4())
    run = uuid.uuid4().hex[:8]
    lines = [event("PlaceOrder", "%s-place-%d" % (run, k), branch, order("ext-%d" % k, contact))
             for k in range(3)]
    # Sent with the orders in the same window: a change may reach the service before its
    # order is stored, is answered UNAVAILABLE and resent until it is
    lines += [event("ChangeStatus", "%s-confirm-%d" % (run, k), branch,
                    {"externalId": "ext-%d" % k, "to": "ORDER_STATUS_CONFIRMED", "actor": "till-2"})
              for k in range(2)]
    lines.append(event("RecordPurchase", run + "-sale", branch, order("sale-1", contact)))
    path = write(tmp_path, lines)

    done = publish(path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "sent 6, acknowledged 6, duplicates 0, failed 0"
    first = orders_of(orders_api, contact)
    assert sorted(first) == ["ext-0", "ext-1", "ext-2", "sale-1"]
    assert [first["ext-%d" % k].status for k in range(3)] == [CONFIRMED, CONFIRMED, PLACED]
    assert first["sale-1"].status == COMPLETED
    assert first["ext-0"].total.minor_units == 1980
    assert all(o.branch == branch for o in first.values())

    # The branch resends everything: each event is a duplicate and nothing changes
    again = publish(path, "--window", "2")
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "sent 6, acknowledged 0, duplicates 6, failed 0"
    assert orders_of(orders_api, contact) == first

    # From stdin, one at a time: the same
    piped = publish("-", "--window", "1", stdin="\n".join(lines) + "\n")
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.strip() == "sent 6, acknowledged 0, duplicates 6, failed 0"
    assert orders_of(orders_api, contact) == first


def test_bad_lines_are_reported_and_the_rest_is_sent(orders_api, branch, tmp_path):
    contact = str(uuid.uuid4())
    run = uuid.uuid4().hex[:8]
    lines = [
        event("PlaceOrder", run + "-a", branch, order("ext-a", contact)),           # 1
        "{not json",                                                                 # 2
        json.dumps({"service": "orders", "method": "PlaceOrder", "branch": branch,  # 3
                    "request": order("ext-x", contact)}),
        event("Frobnicate", run + "-f", branch, {}),                                 # 4
        event("PlaceOrder", run + "-c", branch, order("ext-c", contact, colour="red")),  # 5
        event("PlaceOrder", run + "-b", branch, order("ext-b", contact)),           # 6
        # Refused by the service: PLACED cannot become COMPLETED; a currency must be ISO 4217
        event("ChangeStatus", run + "-done", branch,                                # 7
              {"externalId": "ext-a", "to": "ORDER_STATUS_COMPLETED"}),
        "",                                                                          # 8
        event("PlaceOrder", run + "-d", branch, order("ext-d", contact, currency="euro")),  # 9
        json.dumps({"service": "nosuch", "method": "PlaceOrder", "requestId": run + "-n"}),  # 10
    ]
    path = write(tmp_path, lines)
    done = publish(path)
    assert done.returncode == 1, done.stderr
    assert done.stdout.strip() == "sent 4, acknowledged 2, duplicates 0, failed 7"
    errors = done.stderr
    for lineno, says in [(2, "not a JSON object"), (3, "requestId is required"),
                         (4, 'no method "Frobnicate"'), (5, "colour"), (10, 'no service "nosuch"')]:
        assert "line %d: " % lineno in errors and says in errors, (lineno, errors)
    assert 'line 7 (request id "%s-done"): FAILED_PRECONDITION' % run in errors, errors
    assert 'line 9 (request id "%s-d"): INVALID_ARGUMENT' % run in errors, errors
    assert "line 8" not in errors  # blank lines are not events

    stored = orders_of(orders_api, contact)
    assert sorted(stored) == ["ext-a", "ext-b"]
    assert all(o.status == PLACED for o in stored.values())


@pytest.mark.parametrize(
    "options, says",
    [
        ((), "usage"),
        (("--window", "0", "-"), "--window"),
        (("--retries", "many", "-"), "--retries"),
        (("/nonexistent/events.jsonl",), "could not open"),
    ],
)
def test_usage_errors_exit_64(options, says):
    env = dict(os.environ, CRM_BROKER_ENDPOINT=os.environ["CRM_E2E_BROKER"])
    done = subprocess.run([CRMCTL, "publish", *options], env=env, capture_output=True, text=True,
                          timeout=30, stdin=subprocess.DEVNULL)
    assert done.returncode == 64, done.stderr
    assert says in done.stderr
