"""conftest.py - fixtures of the end-to-end suite: a broker client, the contacts API, fresh
test data, and control of the throwaway PostgreSQL that tests/run-e2e.sh started.

The suite is a client from outside: it sees the broker endpoint, the log files and the
database server's data folder, and nothing of the C code.
"""

import itertools
import os
import random
import subprocess
import sys
import time
import uuid
from collections import namedtuple

import pytest

# Against a suite running elsewhere (tests/run-e2e.sh with CRM_E2E_EXTERNAL_BROKER, as make
# compose-test runs it) there is no PostgreSQL of the harness and maybe no log folder: the
# tests needing them are skipped (pytest_collection_modifyitems)
EXTERNAL = bool(os.environ.get("CRM_E2E_EXTERNAL_BROKER"))
_REQUIRED = ("CRM_E2E_BROKER", "CRM_E2E_PY") + (
    ()
    if EXTERNAL
    else ("CRM_E2E_LOG_DIR", "CRM_E2E_PG_DIR", "CRM_E2E_PG_SH", "CRM_E2E_CONTACTS_DSN", "PGPORT")
)
_missing = [name for name in _REQUIRED if not os.environ.get(name)]
if _missing:
    pytest.exit(
        "tests/e2e needs %s: run it through tests/run-e2e.sh, which starts PostgreSQL, "
        "the broker and the services" % ", ".join(_missing),
        returncode=4,
    )

sys.path.insert(0, os.environ["CRM_E2E_PY"])
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from crm.v1 import common_pb2, contacts_pb2  # noqa: E402
import mdp  # noqa: E402

BROKER = os.environ["CRM_E2E_BROKER"]
LOG_DIR = os.environ.get("CRM_E2E_LOG_DIR", "")
NO_WORKER_MS = int(os.environ.get("CRM_E2E_NO_WORKER_MS", "1000"))


def code_name(code):
    """The name of a crm.v1.StatusCode without its prefix: "NOT_FOUND" for 5."""
    try:
        return common_pb2.StatusCode.Name(code)[len("STATUS_"):]
    except ValueError:
        return "code %d" % code


class Reply:
    """One answer of the suite: the Status frame and the response, decoded."""

    def __init__(self, status, raw, response_type=None):
        self.status = status
        self.code = code_name(status.code)
        self.message = status.message
        self.request_id = status.request_id
        self.replayed = status.replayed
        self.raw = raw
        self.response = None
        if response_type is not None:
            self.response = response_type()
            self.response.ParseFromString(raw)

    def __repr__(self):
        return "<%s %r request_id=%r replayed=%s, %d payload bytes>" % (
            self.code,
            self.message,
            self.request_id,
            self.replayed,
            len(self.raw),
        )


class ContactsApi:
    """Calls of the contacts service as a branch system would make them."""

    SERVICE = "contacts"

    def __init__(self, client, default_branch):
        self.client = client
        self.default_branch = default_branch

    def meta(self, request_id=None, branch=None, deadline_unix_ms=0):
        return mdp.Client.meta(
            request_id=request_id,
            branch=self.default_branch if branch is None else branch,
            deadline_unix_ms=deadline_unix_ms,
        )

    def call(self, method, request, meta=None, timeout_ms=None, response_type=None):
        """Any call; request and meta may be raw bytes. response_type defaults to the
        method's own response when the method is one of crm.v1.Contacts."""
        if response_type is None and isinstance(method, str):
            response_type = getattr(contacts_pb2, method + "Response", None)
        if meta is None:
            meta = self.meta()
        status, raw = self.client.call(self.SERVICE, method, request, meta, timeout_ms)
        return Reply(status, raw, response_type)

    @staticmethod
    def decode(reply, method):
        """A Reply from a (Status, response bytes) pair of Client.recv_call."""
        status, raw = reply
        return Reply(status, raw, getattr(contacts_pb2, method + "Response", None))

    def create(self, contact=None, on_duplicate=0, meta=None, timeout_ms=None, **fields):
        if contact is None:
            contact = contacts_pb2.Contact(**fields)
        request = contacts_pb2.CreateContactRequest(contact=contact, on_duplicate=on_duplicate)
        return self.call("CreateContact", request, meta, timeout_ms)

    def get(self, contact_id, meta=None, timeout_ms=None):
        request = contacts_pb2.GetContactRequest(id=contact_id)
        return self.call("GetContact", request, meta, timeout_ms)

    def update(self, contact, meta=None, timeout_ms=None):
        request = contacts_pb2.UpdateContactRequest(contact=contact)
        return self.call("UpdateContact", request, meta, timeout_ms)

    def find(self, phone="", email="", name="", page_size=0, page_token="", meta=None,
             timeout_ms=None):
        request = contacts_pb2.FindContactsRequest(
            phone=phone,
            email=email,
            name=name,
            page=common_pb2.PageRequest(page_size=page_size, page_token=page_token),
        )
        return self.call("FindContacts", request, meta, timeout_ms)

    def list(self, branch="", page_size=0, page_token="", meta=None, timeout_ms=None):
        request = contacts_pb2.ListContactsRequest(
            branch=branch, page=common_pb2.PageRequest(page_size=page_size, page_token=page_token)
        )
        return self.call("ListContacts", request, meta, timeout_ms)

    def must(self, reply, code="OK"):
        """Returns reply.response after checking the reply's code."""
        assert reply.code == code, reply
        return reply.response

    def still_serving(self):
        """A good request gets a good answer: the service and its database are fine."""
        reply = self.find(name="nobody-" + uuid.uuid4().hex)
        assert reply.code == "OK", reply
        assert len(reply.response.contacts) == 0

    def search(self, phone="", email="", name="", fuzzy_name="", tag="",
               birthday_within_days=0, branch="", page_size=0, page_token="", meta=None,
               timeout_ms=None):
        """FindContacts with every criterion of the request, and the branch narrowing."""
        request = contacts_pb2.FindContactsRequest(
            phone=phone,
            email=email,
            name=name,
            fuzzy_name=fuzzy_name,
            tag=tag,
            birthday_within_days=birthday_within_days,
            branch=branch,
            page=common_pb2.PageRequest(page_size=page_size, page_token=page_token),
        )
        return self.call("FindContacts", request, meta, timeout_ms)

    def duplicates(self, contact_id, limit=0, meta=None, timeout_ms=None):
        request = contacts_pb2.FindDuplicatesRequest(contact_id=contact_id, limit=limit)
        return self.call("FindDuplicates", request, meta, timeout_ms)

    def merge(self, survivor_id, merged_id, actor="e2e-staff", reason="", meta=None,
              timeout_ms=None):
        request = contacts_pb2.MergeContactsRequest(
            survivor_id=survivor_id, merged_id=merged_id, actor=actor, reason=reason
        )
        return self.call("MergeContacts", request, meta, timeout_ms)

    def add_note(self, contact_id, text, author="e2e-staff", meta=None, timeout_ms=None):
        request = contacts_pb2.AddNoteRequest(contact_id=contact_id, text=text, author=author)
        return self.call("AddNote", request, meta, timeout_ms)

    def list_notes(self, contact_id, page_size=0, page_token="", meta=None, timeout_ms=None):
        request = contacts_pb2.ListNotesRequest(
            contact_id=contact_id,
            page=common_pb2.PageRequest(page_size=page_size, page_token=page_token),
        )
        return self.call("ListNotes", request, meta, timeout_ms)

    def set_consent(self, contact_id, channel, granted=True, source=1, wording_version="",
                    recorded_by="e2e-staff", reason="", meta=None, timeout_ms=None):
        request = contacts_pb2.SetConsentRequest(
            contact_id=contact_id,
            channel=channel,
            granted=granted,
            source=source,
            wording_version=wording_version,
            recorded_by=recorded_by,
            reason=reason,
        )
        return self.call("SetConsent", request, meta, timeout_ms)

    def check_consent(self, contact_id, channel, meta=None, timeout_ms=None):
        request = contacts_pb2.CheckConsentRequest(contact_id=contact_id, channel=channel)
        return self.call("CheckConsent", request, meta, timeout_ms)

    def list_audit(self, contact_id, page_size=0, page_token="", meta=None, timeout_ms=None):
        request = contacts_pb2.ListAuditRequest(
            contact_id=contact_id,
            page=common_pb2.PageRequest(page_size=page_size, page_token=page_token),
        )
        return self.call("ListAudit", request, meta, timeout_ms)

    def export(self, contact_id, actor="e2e-staff", reason="", meta=None, timeout_ms=None):
        request = contacts_pb2.ExportContactRequest(
            contact_id=contact_id, actor=actor, reason=reason
        )
        return self.call("ExportContact", request, meta, timeout_ms)

    def erase(self, contact_id, actor="e2e-staff", reason="asked to be forgotten", meta=None,
              timeout_ms=None):
        request = contacts_pb2.EraseContactRequest(
            contact_id=contact_id, actor=actor, reason=reason
        )
        return self.call("EraseContact", request, meta, timeout_ms)

    def get_events(self, after_position=0, limit=0, meta=None, timeout_ms=None):
        request = common_pb2.GetEventsRequest(after_position=after_position, limit=limit)
        return self.call("GetEvents", request, meta, timeout_ms,
                         response_type=common_pb2.GetEventsResponse)


Mobile = namedtuple("Mobile", "e164 national international double_zero digits")


class Fresh:
    """Test data nobody else in this run uses: phones, emails and names are unique keys."""

    def __init__(self):
        # German mobile numbers 0176 xxxx xxxx; the range leaves out 1234 5678 which one
        # test uses literally
        self._numbers = itertools.count(random.randrange(20000000, 80000000, 1000))

    def mobile(self):
        d = "%08d" % next(self._numbers)
        return Mobile(
            e164="+49176" + d,
            national="0176 %s %s" % (d[:4], d[4:]),
            international="+49 (176) %s-%s" % (d[:4], d[4:]),
            double_zero="0049 176 %s" % d,
            digits=d,
        )

    @staticmethod
    def tag():
        return uuid.uuid4().hex[:12]

    def email(self, local="e2e"):
        return "%s.%s@example.org" % (local, self.tag())

    def name(self, prefix="E2e"):
        return prefix + self.tag()

    def branch(self):
        return "e2e-" + self.tag()

    @staticmethod
    def request_id():
        return str(uuid.uuid4())


class Postgres:
    """The suite's database server, driven through tests/lib/pg.sh as the harness does."""

    def __init__(self):
        self.dir = os.environ["CRM_E2E_PG_DIR"]
        self.script = os.environ["CRM_E2E_PG_SH"]
        # The superuser looks into the database the service uses
        dsn = dict(
            item.split("=", 1) for item in os.environ["CRM_E2E_CONTACTS_DSN"].split() if "=" in item
        )
        self.dbname = dsn.get("dbname", "postgres")

    def _sh(self, command):
        env = dict(os.environ, PGPORT_WANTED=os.environ["PGPORT"])
        subprocess.run(
            ["bash", "-c", '. "$0" && ' + command + ' "$1"', self.script, self.dir],
            env=env,
            check=True,
            timeout=120,
        )

    def stop(self):
        self._sh("pg_stop")

    def start(self):
        """Starts the server on its old port unless it is running."""
        self._sh('pg_as_owner "$PG_BINDIR/pg_ctl" -D "$1/data" status >/dev/null 2>&1 || pg_start')

    def query(self, sql):
        """Rows of sql run as the superuser, each a list of text fields."""
        out = subprocess.run(
            ["psql", "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1",
             "-d", self.dbname, "-c", sql],
            env=dict(os.environ, PGUSER="postgres"),
            check=True,
            timeout=30,
            capture_output=True,
            text=True,
        ).stdout
        return [line.split("\t") for line in out.splitlines() if line]

    def background(self, sql):
        """Runs sql as the superuser in a psql of its own; returns the process."""
        return subprocess.Popen(
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.dbname, "-c", sql],
            env=dict(os.environ, PGUSER="postgres"),
            stdout=subprocess.DEVNULL,
        )

    def scalar(self, sql):
        rows = self.query(sql)
        assert len(rows) == 1 and len(rows[0]) == 1, rows
        return rows[0][0]


class Logs:
    """The stdout logs of the processes the harness started."""

    @staticmethod
    def lines(name):
        """The complete lines of a process's log so far (a line still being written is left
        out); name is "contacts" or "broker"."""
        with open(os.path.join(LOG_DIR, name + ".log"), "rb") as f:
            data = f.read()
        return [line.decode("utf-8", "replace") for line in data.split(b"\n")[:-1] if line.strip()]

    @staticmethod
    def wait_for(predicate, timeout_s, interval_s=0.1):
        """Polls predicate until it returns something true; that, or the last value."""
        end = time.monotonic() + timeout_s
        while True:
            value = predicate()
            if value or time.monotonic() >= end:
                return value
            time.sleep(interval_s)


def pytest_collection_modifyitems(config, items):
    """Against an external suite, skips the tests that use the harness's own PostgreSQL (the
    pg fixture), and the log tests when there is no log folder."""
    if not EXTERNAL:
        return
    no_pg = pytest.mark.skip(reason="needs the harness's own PostgreSQL; the suite runs elsewhere")
    no_logs = pytest.mark.skip(reason="no CRM_E2E_LOG_DIR with the logs of the suite")
    for item in items:
        if "pg" in item.fixturenames:
            item.add_marker(no_pg)
        elif "logs" in item.fixturenames and not LOG_DIR:
            item.add_marker(no_logs)


@pytest.fixture(scope="session")
def fresh():
    return Fresh()


@pytest.fixture(scope="session")
def logs():
    return Logs()


@pytest.fixture(scope="session")
def pg():
    return Postgres()


@pytest.fixture
def client():
    c = mdp.Client(BROKER, timeout_ms=5000)
    yield c
    c.close()


@pytest.fixture
def branch(fresh):
    """A branch of this test's own, sent in RequestMeta by default."""
    return fresh.branch()


@pytest.fixture
def api(client, branch):
    return ContactsApi(client, branch)


@pytest.fixture
def make_api(new_client, branch):
    """Makes a ContactsApi on a connection of its own."""

    def make(branch_=None):
        return ContactsApi(new_client(), branch if branch_ is None else branch_)

    return make


@pytest.fixture
def new_client():
    """Makes more clients, each its own connection; all closed after the test."""
    made = []

    def make(timeout_ms=5000, socket_type="dealer"):
        c = mdp.Client(BROKER, timeout_ms=timeout_ms, socket_type=socket_type)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


@pytest.fixture(scope="session")
def maybe_pg():
    """The harness's PostgreSQL for a look behind the API, or None against a suite running
    elsewhere (the checks that need it are then left out, the rest of the test still runs)."""
    return None if EXTERNAL else Postgres()


# --- orders ----------------------------------------------------------------------------------

from crm.v1 import orders_pb2  # noqa: E402


class OrdersApi(ContactsApi):
    """Calls of the orders service as a branch system, staff or the tracking page would make
    them."""

    SERVICE = "orders"

    def call(self, method, request, meta=None, timeout_ms=None, response_type=None):
        if response_type is None and isinstance(method, str):
            response_type = getattr(orders_pb2, method + "Response", None)
        return super().call(method, request, meta, timeout_ms, response_type)

    @staticmethod
    def decode(reply, method):
        status, raw = reply
        return Reply(status, raw, getattr(orders_pb2, method + "Response", None))

    @staticmethod
    def item(product_id="sku-1", name="Coffee beans", quantity=1, unit_price_minor=990):
        return orders_pb2.OrderItem(product_id=product_id, name=name, quantity=quantity,
                                    unit_price_minor=unit_price_minor)

    def new_order(self, external_id=None, items=None, currency="EUR", **fields):
        """An order as a branch would send it: a fresh external id and one item unless told."""
        return orders_pb2.Order(
            external_id=external_id or "ext-" + uuid.uuid4().hex[:12],
            items=[self.item()] if items is None else items,
            currency=currency,
            **fields,
        )

    def place(self, order=None, meta=None, timeout_ms=None, **fields):
        if order is None:
            order = self.new_order(**fields)
        return self.call("PlaceOrder", orders_pb2.PlaceOrderRequest(order=order), meta, timeout_ms)

    def record_purchase(self, order=None, meta=None, timeout_ms=None, **fields):
        if order is None:
            order = self.new_order(**fields)
        return self.call("RecordPurchase", orders_pb2.RecordPurchaseRequest(order=order), meta,
                         timeout_ms)

    def change(self, to, order_id="", external_id="", actor="e2e-till", note="", reason="",
               promised_by_unix_ms=0, meta=None, timeout_ms=None):
        request = orders_pb2.ChangeStatusRequest(
            order_id=order_id, external_id=external_id, to=to, actor=actor, note=note,
            reason=reason, promised_by_unix_ms=promised_by_unix_ms)
        return self.call("ChangeStatus", request, meta, timeout_ms)

    def get(self, order_id, meta=None, timeout_ms=None):
        return self.call("GetOrder", orders_pb2.GetOrderRequest(order_id=order_id), meta,
                         timeout_ms)

    def track(self, tracking_code, meta=None, timeout_ms=None):
        return self.call("TrackOrder", orders_pb2.TrackOrderRequest(tracking_code=tracking_code),
                         meta, timeout_ms)

    def list(self, contact_id="", branch="", day="", page_size=0, page_token="", meta=None,
             timeout_ms=None):
        request = orders_pb2.ListOrdersRequest(
            contact_id=contact_id, branch=branch, day=day,
            page=common_pb2.PageRequest(page_size=page_size, page_token=page_token))
        return self.call("ListOrders", request, meta, timeout_ms)

    def sweep_late(self, as_of_unix_ms=0, meta=None, timeout_ms=None):
        return self.call("SweepLate", orders_pb2.SweepLateRequest(as_of_unix_ms=as_of_unix_ms),
                         meta, timeout_ms)

    def still_serving(self):
        reply = self.get(str(uuid.uuid4()))
        assert reply.code == "NOT_FOUND", reply


@pytest.fixture
def orders_api(client, branch):
    """The orders service, with this test's own branch in RequestMeta by default."""
    return OrdersApi(client, branch)
