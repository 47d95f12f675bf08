"""test_crmctl.py - the operators' command line against the running suite: JSON in, JSON out,
the exit code from the status, service discovery, and the live event tail."""

import json
import os
import subprocess
import time

import pytest
import zmq

from crm.v1 import contacts_pb2

CRMCTL = os.path.join(os.environ.get("CRM_E2E_BIN", "build/bin"), "crmctl")


def crmctl(*args, stdin=None, timeout=30):
    env = dict(
        os.environ,
        CRM_BROKER_ENDPOINT=os.environ["CRM_E2E_BROKER"],
        CRM_BROKER_EVENTS_OUT=os.environ.get("CRM_E2E_EVENTS_OUT", ""),
        CRM_TIMEOUT_MS="3000",
    )
    return subprocess.run(
        [CRMCTL, *args], input=stdin, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_call_creates_and_finds(fresh):
    phone = fresh.mobile()
    branch = fresh.branch()
    request = {"contact": {"givenName": "Olga", "phones": [{"number": phone.national}]}}
    done = crmctl("call", "--branch", branch, "contacts", "CreateContact", json.dumps(request))
    assert done.returncode == 0, done.stderr
    created = json.loads(done.stdout)
    assert created["created"] is True
    assert created["contact"]["phones"][0]["number"] == phone.e164
    assert created["contact"]["branch"] == branch

    found = crmctl("call", "contacts", "FindContacts", json.dumps({"phone": phone.international}))
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["contacts"][0]["id"] == created["contact"]["id"]

    again = crmctl("call", "--branch", branch, "contacts", "CreateContact", json.dumps(request))
    assert again.returncode == 6, again.stderr  # ALREADY_EXISTS
    assert "ALREADY_EXISTS" in again.stderr
    assert json.loads(again.stdout)["existingId"] == created["contact"]["id"]


def test_call_reads_stdin_and_reuses_request_id(fresh):
    request_id = fresh.request_id()
    body = json.dumps({"contact": {"givenName": "Piotr", "emails": [{"address": fresh.email()}]}})
    first = crmctl("call", "--branch", fresh.branch(), "--request-id", request_id,
                   "contacts", "CreateContact", "-", stdin=body)
    second = crmctl("call", "--branch", fresh.branch(), "--request-id", request_id,
                    "contacts", "CreateContact", "-", stdin=body)
    assert first.returncode == 0 and second.returncode == 0, (first.stderr, second.stderr)
    assert json.loads(first.stdout) == json.loads(second.stdout)


@pytest.mark.parametrize(
    "args, says",
    [
        (("call", "contacts", "NoSuchMethod"), "no method"),
        (("call", "nosuch", "GetContact"), "no service"),
        (("call", "contacts", "GetContact", '{"idd": "x"}'), "unknown field"),
        (("call", "contacts", "GetContact", "{not json"), "invalid"),
        (("call",), "usage"),
        (("frobnicate",), "usage"),
    ],
)
def test_usage_errors_exit_64(args, says):
    done = crmctl(*args)
    assert done.returncode == 64
    assert says in done.stderr


def test_status_becomes_exit_code():
    done = crmctl("call", "contacts", "GetContact", json.dumps({"id": "00000000-0000-4000-8000-000000000000"}))
    assert done.returncode == 5  # NOT_FOUND
    assert "NOT_FOUND" in done.stderr


def test_describe_lists_services_and_methods():
    services = crmctl("describe")
    assert services.returncode == 0
    assert "contacts" in services.stdout
    methods = crmctl("describe", "contacts")
    assert methods.returncode == 0
    assert "CreateContact\tcrm.v1.CreateContactRequest -> crm.v1.CreateContactResponse" in methods.stdout


def test_help_lists_variables():
    done = crmctl("--help")
    assert done.returncode == 0
    assert "CRM_BROKER_ENDPOINT" in done.stdout and "crmctl call" in done.stdout


def test_tail_prints_events_as_json():
    """An event published into the broker's XSUB comes out of crmctl tail as a JSON line,
    decoded by its topic's type."""
    events_in = os.environ["CRM_E2E_EVENTS_IN"]
    env = dict(os.environ, CRM_BROKER_EVENTS_OUT=os.environ["CRM_E2E_EVENTS_OUT"])
    tail = subprocess.Popen([CRMCTL, "tail", "contacts."], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    ctx = zmq.Context.instance()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.connect(events_in)
    try:
        payload = contacts_pb2.Contact(given_name="Tailed", branch="b-tail").SerializeToString()
        poller_deadline = time.monotonic() + 10
        line = None
        os.set_blocking(tail.stdout.fileno(), False)
        # Subscriptions take a moment to travel to the publisher: publish until one arrives
        while line is None and time.monotonic() < poller_deadline:
            pub.send_multipart([b"contacts.Contact", payload])
            pub.send_multipart([b"orders.Ignored", b"x"])
            time.sleep(0.1)
            text = tail.stdout.readline()
            if text:
                line = json.loads(text)
        assert line is not None, "crmctl tail printed nothing"
        assert line["topic"] == "contacts.Contact"
        assert line["event"]["givenName"] == "Tailed"
    finally:
        tail.terminate()
        tail.wait(timeout=10)
        pub.close()


def test_ping_for_health_checks():
    assert crmctl("ping").returncode == 0
    assert crmctl("ping", "contacts").returncode == 0
    missing = crmctl("ping", "nosuchservice")
    assert missing.returncode == 14
    assert "no instance" in missing.stderr


def test_ping_without_broker_fails():
    env = dict(os.environ, CRM_BROKER_ENDPOINT="tcp://127.0.0.1:9", CRM_TIMEOUT_MS="300")
    done = subprocess.run([CRMCTL, "ping"], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 14
