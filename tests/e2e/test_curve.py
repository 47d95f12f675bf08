"""test_curve.py - the suite behind a broker with CURVE: known clients are served encrypted,
others get nothing; services talk to it with keys of their own (requests, events, their event
consumer). Starts its own broker and contacts instance (on the harness's database)."""

import json
import os
import socket
import subprocess
import time

import pytest
import zmq
from zmq.utils import z85
from crm.v1 import contacts_pb2

import mdp
from conftest import EXTERNAL, ContactsApi

BIN = os.environ.get("CRM_E2E_BIN", "build/bin")

pytestmark = pytest.mark.skipif(bool(EXTERNAL), reason="starts a broker of its own")


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _keygen(z85=False):
    out = subprocess.run([os.path.join(BIN, "crmctl"), "keygen"] + (["--z85"] if z85 else []),
                         check=True, capture_output=True, text=True).stdout
    keys = dict(line.split(" ", 1) for line in out.splitlines())
    return keys["public-key"], keys["secret-key"]


def _lines(path):
    with open(path, "rb") as f:
        return [json.loads(line) for line in f.read().split(b"\n")[:-1] if line.strip()]


class Suite:
    """A broker with CURVE and a contacts instance, with their keys and logs."""

    def __init__(self, tmp):
        self.broker_public, broker_secret = _keygen()
        self.service_public, self.service_secret = _keygen(z85=True)
        # The Python client's keys, from pyzmq, in Z85
        self.client_public, self.client_secret = zmq.curve_keypair()
        keys_file = os.path.join(tmp, "clients.keys")
        with open(keys_file, "w") as f:
            f.write("# who may call\n%s contacts\n%s e2e\n"
                    % (self.service_public, self.client_public.decode()))
        ports = [_free_port() for _ in range(4)]
        self.endpoint = "tcp://127.0.0.1:%d" % ports[0]
        self.events_out = "tcp://127.0.0.1:%d" % ports[3]
        common = dict(os.environ, CRM_BROKER_ENDPOINT=self.endpoint,
                      CRM_BROKER_WORKER_ENDPOINT="tcp://127.0.0.1:%d" % ports[1],
                      CRM_BROKER_EVENTS_IN="tcp://127.0.0.1:%d" % ports[2],
                      CRM_BROKER_EVENTS_OUT=self.events_out, CRM_BROKER_HEARTBEAT_MS="500",
                      CRM_LOG_FORMAT="json", CRM_LOG_LEVEL="debug")
        self.broker_log = os.path.join(tmp, "broker.log")
        self.contacts_log = os.path.join(tmp, "contacts.log")
        self.broker = subprocess.Popen(
            [os.path.join(BIN, "crm-broker")],
            env=dict(common, CRM_BROKER_SECRET_KEY=broker_secret,
                     CRM_BROKER_CLIENT_KEYS_FILE=keys_file),
            stdout=open(self.broker_log, "wb"), stderr=subprocess.STDOUT)
        self.contacts = subprocess.Popen(
            [os.path.join(BIN, "crm-contacts")],
            env=dict(common, CRM_CONTACTS_DSN=os.environ["CRM_E2E_CONTACTS_DSN"],
                     CRM_DEFAULT_CALLING_CODE="49", CRM_BROKER_PUBLIC_KEY=self.broker_public,
                     CRM_CURVE_SECRET_KEY=self.service_secret),
            stdout=open(self.contacts_log, "wb"), stderr=subprocess.STDOUT)

    def curve(self, public=None, secret=None):
        return (z85.encode(bytes.fromhex(self.broker_public)),
                public or self.client_public, secret or self.client_secret)

    def client(self, curve=True, timeout_ms=3000, **keys):
        return mdp.Client(self.endpoint, timeout_ms=timeout_ms,
                          curve=self.curve(**keys) if curve else None)

    def stop(self):
        codes = []
        for process in (self.contacts, self.broker):
            process.terminate()
            try:
                codes.append(process.wait(timeout=20))
            except subprocess.TimeoutExpired:
                process.kill()
                codes.append(process.wait())
        return codes


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    s = Suite(str(tmp_path_factory.mktemp("curve")))
    try:
        with s.client() as c:
            end = time.monotonic() + 30
            while c.mmi_service("contacts", timeout_ms=500) != "200":
                assert s.broker.poll() is None and s.contacts.poll() is None, "a process exited"
                assert time.monotonic() < end, "contacts never registered with the CURVE broker"
    except BaseException:
        s.stop()
        raise
    yield s
    # A clean stop (and, sanitized, no leak) for both
    assert s.stop() == [0, 0]


def test_a_known_client_is_served(suite, fresh):
    with suite.client() as c:
        api = ContactsApi(c, fresh.branch())
        m = fresh.mobile()
        made = api.must(api.create(given_name="Curve", phones=[contacts_pb2.Phone(number=m.national)]))
        got = api.must(api.get(made.contact.id))
        assert got.contact.given_name == "Curve"


def test_a_client_in_the_clear_gets_nothing(suite):
    with suite.client(curve=False, timeout_ms=800) as c:
        assert c.mmi_service("contacts", timeout_ms=800) is None


def test_an_unknown_key_is_refused_and_said(suite):
    public, secret = zmq.curve_keypair()
    with suite.client(public=public, secret=secret) as c:
        assert c.mmi_service("contacts", timeout_ms=800) is None
    refused = [e for e in _lines(suite.broker_log) if "refused a CURVE client" in e["msg"]]
    assert refused and public.decode() in refused[-1]["msg"], refused


def test_crmctl_with_the_keys_calls_and_without_does_not(suite, fresh):
    crmctl = os.path.join(BIN, "crmctl")
    env = dict(os.environ, CRM_BROKER_ENDPOINT=suite.endpoint, CRM_TIMEOUT_MS="800",
               CRM_RETRIES="0", CRM_BROKER_PUBLIC_KEY=suite.broker_public,
               CRM_CURVE_SECRET_KEY=suite.service_secret)
    done = subprocess.run([crmctl, "call", "--branch", fresh.branch(), "contacts",
                           "FindContacts", '{"phone": "+4915199999999"}'],
                          env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    del env["CRM_CURVE_SECRET_KEY"], env["CRM_BROKER_PUBLIC_KEY"]
    done = subprocess.run([crmctl, "ping", "contacts"], env=env, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 14, done.stderr


def test_events_go_out_encrypted_to_a_known_subscriber(suite, fresh):
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    server, public, secret = suite.curve()
    sub.curve_serverkey, sub.curve_publickey, sub.curve_secretkey = server, public, secret
    sub.setsockopt(zmq.SUBSCRIBE, b"contacts.")
    sub.setsockopt(zmq.LINGER, 0)
    sub.connect(suite.events_out)
    try:
        # The subscription travels through the broker to the publisher first, each hop a
        # CURVE handshake: create until one contact's event is heard
        heard = set()
        made = []
        end = time.monotonic() + 15
        with suite.client() as c:
            api = ContactsApi(c, fresh.branch())
            while time.monotonic() < end and not heard.intersection(made):
                made.append(api.must(api.create(given_name="Heard")).contact.id.encode())
                wait = time.monotonic() + 0.5
                while time.monotonic() < wait and not heard:
                    if sub.poll(100):
                        frames = sub.recv_multipart()
                        if frames[0] == b"contacts.ContactCreated":
                            heard.update(m for m in made if m in frames[1])
        assert heard.intersection(made), "no contacts.ContactCreated came through CURVE"
    finally:
        sub.close()


def test_the_services_consumer_asks_through_curve(suite):
    # No orders instance serves this broker: the consumer's GetEvents are answered
    # UNAVAILABLE by the broker, which only an admitted client hears
    def answered():
        return [e for e in _lines(suite.contacts_log)
                if e["msg"].startswith("GetEvents from orders: UNAVAILABLE")]

    end = time.monotonic() + 15
    while not answered() and time.monotonic() < end:
        time.sleep(0.2)
    assert answered(), "the consumer got no answer through CURVE"
    assert not [e for e in _lines(suite.contacts_log)
                if e["msg"].startswith("no answer from orders to GetEvents")]


def test_crmctl_tail_with_the_keys_hears_the_services_events(suite, fresh):
    env = dict(os.environ, CRM_BROKER_EVENTS_OUT=suite.events_out,
               CRM_BROKER_PUBLIC_KEY=suite.broker_public,
               CRM_CURVE_SECRET_KEY=suite.service_secret)
    tail = subprocess.Popen([os.path.join(BIN, "crmctl"), "tail", "contacts."], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        os.set_blocking(tail.stdout.fileno(), False)
        seen = None
        end = time.monotonic() + 10
        with suite.client() as c:
            api = ContactsApi(c, fresh.branch())
            # The subscription travels to the broker first: create until one is heard
            while seen is None and time.monotonic() < end:
                made = api.must(api.create(given_name="Tailed")).contact
                time.sleep(0.2)
                for text in iter(tail.stdout.readline, ""):
                    line = json.loads(text)
                    if line.get("event", {}).get("contactId") == made.id or \
                            made.id in json.dumps(line):
                        seen = line
        assert seen is not None, "crmctl tail heard nothing through CURVE"
        assert seen["topic"] == "contacts.ContactCreated"
    finally:
        tail.terminate()
        tail.wait(timeout=10)
