"""scenarios.py - what make compose-test does to the deployed suite from outside: requests spread
over scaled orders instances, an orders instance killed in the middle of a stream of branch
events (PlaceOrder), and a PostgreSQL restart. tests/compose/run.sh brings the suite up and
calls one scenario at a time:

    scenarios.py spread     --broker EP --containers ID,ID,ID
    scenarios.py kill       --broker EP --containers ID,ID,ID --postgres ID [--how crash]
    scenarios.py pg-restart --broker EP --containers ID,ID,ID --postgres ID

--containers are the orders instances.
Each prints what it saw, appends its figures to --figures as "name=value" lines, and exits 0
when the suite behaved, 1 when not. The client is the one of the end-to-end suite
(tests/e2e/mdp.py); it resends a request with the same request id after a timeout or an
UNAVAILABLE answer, as docs/protocol.md asks of every client.
"""

import argparse
import calendar
import json
import os
import random
import subprocess
import sys
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
sys.path.insert(0, os.environ.get("CRM_E2E_PY", os.path.join(HERE, "..", "..", "build", "py")))

from crm.v1 import common_pb2, contacts_pb2, orders_pb2  # noqa: E402
import mdp  # noqa: E402

OK = common_pb2.StatusCode.Value("STATUS_OK")
UNAVAILABLE = common_pb2.StatusCode.Value("STATUS_UNAVAILABLE")


def say(text):
    print("compose-test: " + text, flush=True)


def code_name(code):
    try:
        return common_pb2.StatusCode.Name(code)[len("STATUS_"):]
    except ValueError:
        return "code %d" % code


def docker(*args, check=True, timeout=120):
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=check, timeout=timeout
    )


def psql(postgres, sql):
    """Rows of sql run as the superuser inside the postgres container."""
    out = docker(
        "exec", postgres, "psql", "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1",
        "-U", "postgres", "-d", "crm", "-c", sql,
    ).stdout
    return [line.split("\t") for line in out.splitlines() if line]


def served_by(containers, request_ids, since):
    """How many of request_ids each container answered OK, from its debug log lines."""
    counts = {}
    for cid in containers:
        logs = docker("logs", "--since", since, cid).stdout.splitlines()
        n = 0
        for line in logs:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("request_id") in request_ids and " ok in " in entry.get("msg", ""):
                n += 1
        counts[cid] = n
    return counts


def iso_seconds(stamp):
    """Seconds since the epoch of an RFC 3339 UTC time stamp, as in the logs and docker inspect."""
    stamp = stamp.rstrip("Z")
    whole, _, fraction = stamp.partition(".")
    seconds = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
    return seconds + (float("0." + fraction[:6]) if fraction else 0.0)


def docker_now():
    """A --since timestamp for docker logs, a little in the past to allow for clock steps."""
    return "%.3f" % (time.time() - 1)


def call_resending(client, service, method, request, branch, attempts=20):
    """One call, resent with the same request id while the answer is UNAVAILABLE or missing
    (an instance that has just started may not have its database connection yet)."""
    meta = mdp.Client.meta(branch=branch, caller="compose-test")
    for _ in range(attempts - 1):
        try:
            status, raw = client.call(service, method, request, meta)
        except TimeoutError:
            continue
        if status.code != UNAVAILABLE:
            return status, raw
        time.sleep(0.2)
    return client.call(service, method, request, meta)


class Writes:
    """A stream of branch events over one connection, window requests in flight: PlaceOrder
    of one branch of its own (RequestMeta.branch), each a new order whose external_id (the
    branch's own order number) carries the run's prefix, its request id the branch's event id.
    A request is resent with the same request id and payload after timeout_s without an
    answer, or soon after an UNAVAILABLE answer, until it is acknowledged (OK)."""

    service = "orders"
    method = "PlaceOrder"
    response_type = orders_pb2.PlaceOrderResponse

    def __init__(self, broker, prefix, count, window=16, timeout_s=3.0):
        self.client = mdp.Client(broker, timeout_ms=int(timeout_s * 1000))
        self.window = window
        self.timeout_s = timeout_s
        self.branch = "compose-" + uuid.uuid4().hex[:8]
        self.requests = []
        for i in range(count):
            key, payload = self.payload(prefix, i)
            self.requests.append(
                dict(
                    id=str(uuid.uuid4()),
                    key=key,
                    payload=payload,
                    attempts=0,
                    first_sent=None,
                    sent=None,
                    resend_at=None,
                    acked=None,
                    made_id=None,
                )
            )
        self.by_id = {r["id"]: r for r in self.requests}
        self.next = 0
        self.in_flight = set()
        self.unavailable = 0
        self.timeouts = 0
        self.late_replies = 0
        self.errors = []

    def payload(self, prefix, i):
        """The key the stored row is found by (the external_id) and the request of event i."""
        external_id = "%s-%05d" % (prefix, i)
        order = orders_pb2.Order(
            external_id=external_id,
            items=[orders_pb2.OrderItem(product_id="sku-%d" % (i % 40), name="Coffee beans",
                                        quantity=1 + i % 3, unit_price_minor=990)],
            currency="EUR",
        )
        return external_id, orders_pb2.PlaceOrderRequest(order=order)

    @staticmethod
    def made(response):
        """The id of what an acknowledged request made."""
        return response.order.id

    def _send(self, r):
        meta = mdp.Client.meta(request_id=r["id"], branch=self.branch, caller="compose-test")
        self.client.send_call(self.service, self.method, r["payload"], meta)
        now = time.monotonic()
        r["attempts"] += 1
        r["sent"] = now
        r["resend_at"] = None
        if r["first_sent"] is None:
            r["first_sent"] = now
        self.in_flight.add(r["id"])

    def acked(self):
        return sum(1 for r in self.requests if r["acked"] is not None)

    def step(self):
        """Sends what the window allows, takes the answers there are, resends what is due."""
        while self.next < len(self.requests) and len(self.in_flight) < self.window:
            self._send(self.requests[self.next])
            self.next += 1
        reply = self.client.recv_call(50)
        while reply is not None:
            self._answer(*reply)
            reply = self.client.recv_call(0)
        now = time.monotonic()
        for rid in list(self.in_flight):
            r = self.by_id[rid]
            if r["resend_at"] is not None and now >= r["resend_at"]:
                self._send(r)
            elif r["resend_at"] is None and now - r["sent"] > self.timeout_s:
                self.timeouts += 1
                self._send(r)

    def _answer(self, status, raw):
        r = self.by_id.get(status.request_id)
        if r is None:
            self.errors.append("answer for an unknown request id %r" % status.request_id)
            return
        if status.code == OK:
            response = self.response_type()
            response.ParseFromString(raw)
            made_id = self.made(response)
            if r["acked"] is not None:
                # The answer to an earlier attempt: it must name the same record
                self.late_replies += 1
                if made_id != r["made_id"]:
                    self.errors.append(
                        "request %s answered twice with different ids %s and %s"
                        % (r["id"], r["made_id"], made_id)
                    )
                return
            r["acked"] = time.monotonic()
            r["made_id"] = made_id
            r["replayed"] = status.replayed
            self.in_flight.discard(r["id"])
        elif status.code == UNAVAILABLE:
            self.unavailable += 1
            if r["acked"] is None and r["id"] in self.in_flight:
                r["resend_at"] = time.monotonic() + 0.2
        else:
            self.errors.append(
                "request %s answered %s: %s" % (r["id"], code_name(status.code), status.message)
            )
            self.in_flight.discard(r["id"])

    def done(self):
        return self.next == len(self.requests) and not self.in_flight

    def run(self, deadline_s, on_step=None):
        end = time.monotonic() + deadline_s
        while not self.done() and time.monotonic() < end:
            self.step()
            if on_step:
                on_step(self)
        return self.done()

    def check_stored(self, postgres, prefix):
        """Every acknowledged PlaceOrder is stored once in orders.orders, in the stream's
        branch, with the order id its answer gave, and its request id holds a stored reply;
        nothing else was stored under the run's prefix or in the stream's branch. Returns a
        list of problems."""
        problems = []
        rows = psql(
            postgres,
            "SELECT branch, external_id, id FROM orders.orders WHERE branch = '%s' "
            "OR external_id LIKE '%s%%'" % (self.branch, prefix),
        )
        stored = {}
        for branch, external_id, oid in rows:
            stored.setdefault((branch, external_id), []).append(oid)
        for r in self.requests:
            ids = stored.pop((self.branch, r["key"]), [])
            if r["acked"] is None:
                if len(ids) > 1:
                    problems.append("%s (never acknowledged) stored %d times" % (r["key"], len(ids)))
                continue
            if ids != [r["made_id"]]:
                problems.append(
                    "%s acknowledged as %s but stored as %s" % (r["key"], r["made_id"], ids)
                )
        if stored:
            problems.append("%d orders stored that no request made: %s"
                            % (len(stored), sorted(stored)[:3]))
        # Each acknowledged event id was claimed once, for PlaceOrder, with its reply stored
        acked_ids = [r["id"] for r in self.requests if r["acked"] is not None]
        if acked_ids:
            claimed = psql(
                postgres,
                "SELECT count(*) FILTER (WHERE method = 'PlaceOrder' AND reply IS NOT NULL), "
                "count(*) FROM orders.crm_idempotency WHERE request_id = ANY ('{%s}'::text[])"
                % ",".join(acked_ids),
            )[0]
            if claimed != [str(len(acked_ids))] * 2:
                problems.append("%d requests acknowledged, %s claimed with a PlaceOrder reply "
                                "of %s claimed" % (len(acked_ids), claimed[0], claimed[1]))
        # Found through the service too, by id
        client = mdp.Client(self.client.endpoint, timeout_ms=5000)
        try:
            for r in random.sample(self.requests, min(50, len(self.requests))):
                if r["acked"] is None:
                    continue
                request = orders_pb2.GetOrderRequest(order_id=r["made_id"])
                status, raw = call_resending(client, "orders", "GetOrder", request, self.branch)
                found = orders_pb2.GetOrderResponse()
                found.ParseFromString(raw)
                if (status.code != OK or found.order.external_id != r["key"]
                        or found.order.branch != self.branch):
                    problems.append("GetOrder for %s: %s %r %r" % (
                        r["key"], code_name(status.code), found.order.branch,
                        found.order.external_id))
        finally:
            client.close()
        return problems

    def close(self):
        self.client.close()


class ContactWrites(Writes):
    """The same stream as CreateContact: a contact of its own per request (unique name and
    phone). The PostgreSQL restart probes contacts with it, next to orders."""

    service = "contacts"
    method = "CreateContact"
    response_type = contacts_pb2.CreateContactResponse

    def __init__(self, broker, prefix, count, window=16, timeout_s=3.0):
        self.phone_base = random.randrange(10000000, 90000000 - count)
        super().__init__(broker, prefix, count, window, timeout_s)

    def payload(self, prefix, i):
        name = "%s%05d" % (prefix, i)
        contact = contacts_pb2.Contact(
            given_name=name, phones=[contacts_pb2.Phone(number="+49176%08d" % (self.phone_base + i))]
        )
        return name, contacts_pb2.CreateContactRequest(contact=contact)

    @staticmethod
    def made(response):
        return response.contact.id


class Figures:
    def __init__(self, path):
        self.path = path

    def add(self, name, value):
        say("%s = %s" % (name, value))
        if self.path:
            with open(self.path, "a") as f:
                f.write("%s=%s\n" % (name, value))


def spread(args, figures):
    """PlaceOrder requests from one client are answered by every orders instance."""
    containers = args.containers.split(",")
    since = docker_now()
    prefix = "Spread" + uuid.uuid4().hex[:6]
    writes = Writes(args.broker, prefix, args.count, window=24)
    try:
        if not writes.run(60):
            say("spread: only %d of %d requests acknowledged in 60 s" % (writes.acked(), args.count))
            return 1
    finally:
        writes.close()
    if writes.errors:
        say("spread: " + "; ".join(writes.errors[:5]))
        return 1
    ids = {r["id"] for r in writes.requests}
    # Debug lines are written before the reply goes out: give the log a moment
    time.sleep(1)
    counts = served_by(containers, ids, since)
    shares = ", ".join("%s: %d" % (cid[:12], n) for cid, n in counts.items())
    figures.add("spread_%d_requests" % args.count, shares)
    if sum(counts.values()) < args.count:
        say("spread: the logs show %d answers for %d requests" % (sum(counts.values()), args.count))
        return 1
    least = min(counts.values())
    if least < args.count // (4 * len(containers)):
        say("spread: an instance answered only %d of %d requests" % (least, args.count))
        return 1
    return 0


def kill(args, figures):
    """Kills one orders instance while a stream of PlaceOrder branch events runs: every event
    is acknowledged in the end, and every acknowledged order is stored exactly once.

    --how docker-kill: `docker kill`, which the engine counts as an operator's stop, so the
    restart policy leaves the instance down. --how crash: SIGKILL to the instance's process
    from the host, as the kernel's OOM killer would; the engine restarts it."""
    containers = args.containers.split(",")
    victim = containers[args.victim % len(containers)]
    pid = int(docker("inspect", "-f", "{{.State.Pid}}", victim).stdout)
    restarts_before = int(docker("inspect", "-f", "{{.RestartCount}}", victim).stdout)
    prefix = "Kill" + uuid.uuid4().hex[:6]
    writes = Writes(args.broker, prefix, args.count, window=args.window, timeout_s=args.timeout)
    state = {}

    def kill_when_due(w):
        if "killed" in state or w.acked() < args.count // 3:
            return
        state["in_flight"] = set(w.in_flight)
        state["acked_before"] = w.acked()
        if args.how == "crash":
            os.kill(pid, 9)
        else:
            # Not waited for: the stream goes on while the engine kills
            state["killer"] = subprocess.Popen(["docker", "kill", victim], stdout=subprocess.DEVNULL)
        state["killed"] = time.monotonic()
        state["killed_wall"] = time.time()
        say("%s of %s with %d of %d acknowledged and %d in flight" % (
            args.how, victim[:12], state["acked_before"], args.count, len(state["in_flight"])))

    started = time.monotonic()
    try:
        complete = writes.run(args.deadline, kill_when_due)
        elapsed = time.monotonic() - started
    except PermissionError:
        say("kill: not allowed to signal the process of %s (run as root)" % victim[:12])
        return 1
    finally:
        writes.close()
        if "killer" in state:
            state["killer"].wait(timeout=60)
    if "killed" not in state:
        say("kill: the stream ended before the kill")
        return 1
    killed = state["killed"]
    name = "kill" if args.how == "docker-kill" else "crash"
    # The events the victim held when it died are those resent; how long they took to be
    # acknowledged after the kill, and the longest pause in acknowledgements after it
    caught = [r for r in writes.requests if r["attempts"] > 1]
    after = sorted(r["acked"] for r in writes.requests if r["acked"] and r["acked"] > killed)
    gaps = [b - a for a, b in zip([killed] + after, after)]
    figures.add("%s_stream" % name,
                "%d PlaceOrder in %.1f s, window %d; %d caught by the kill and resent "
                "(%d timeouts, %d UNAVAILABLE answers)"
                % (args.count, elapsed, args.window, len(caught), writes.timeouts, writes.unavailable))
    if not caught:
        say("kill: no event was caught in flight by the kill this time")
    else:
        replayed = sum(1 for r in caught if r.get("replayed"))
        say("kill: %d of the %d caught events had committed before the kill; their resends "
            "were answered from the stored reply" % (replayed, len(caught)))
        figures.add("%s_recovery_s" % name, "%.1f (until the last event caught by the kill was acknowledged)"
                    % (max(r["acked"] or 0 for r in caught) - killed))
    figures.add("%s_longest_pause_s" % name, "%.2f (between acknowledgements after the kill)"
                % (max(gaps) if gaps else 0))
    failed = 0
    if not complete:
        say("kill: only %d of %d requests acknowledged within %d s" % (
            writes.acked(), args.count, args.deadline))
        failed = 1
    if writes.errors:
        say("kill: " + "; ".join(writes.errors[:5]))
        failed = 1
    problems = writes.check_stored(args.postgres, prefix)
    if problems:
        say("kill: %d problems: %s" % (len(problems), "; ".join(problems[:5])))
        failed = 1
    dangling = psql(args.postgres,
                    "SELECT count(*) FROM orders.crm_idempotency WHERE reply IS NULL")[0][0]
    if dangling != "0":
        say("kill: %s requests claimed without a stored reply" % dangling)
        failed = 1
    if not failed:
        say("kill: all %d acknowledged orders stored exactly once (%d replies to earlier "
            "attempts, all the same order)" % (writes.acked(), writes.late_replies))
    if args.how == "crash":
        # The engine restarts a crashed instance (restart: unless-stopped); the process says
        # "serving" once it has registered with the broker again
        serving = None
        end = time.monotonic() + args.deadline
        while serving is None and time.monotonic() < end:
            time.sleep(0.5)
            for line in docker("logs", "--since", "%.3f" % state["killed_wall"], victim).stdout.splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if entry.get("msg", "").startswith("serving "):
                    serving = iso_seconds(entry["ts"]) - state["killed_wall"]
                    break
        if serving is None:
            say("crash: %s was not serving again within %d s" % (victim[:12], args.deadline))
            failed = 1
        else:
            started = docker("inspect", "-f", "{{.State.StartedAt}}", victim).stdout.strip()
            figures.add("crash_serving_again_s", "%.1f (the engine started the process again after "
                        "%.1f s)" % (serving, iso_seconds(started) - state["killed_wall"]))
    return failed


def pg_restart(args, figures):
    """PostgreSQL restarts under a trickle of writes to both services (PlaceOrder to orders,
    CreateContact to contacts): they answer UNAVAILABLE while it is away and serve again by
    themselves once it is back; then every orders instance must serve again."""
    containers = args.containers.split(",")
    prefix = "Pg" + uuid.uuid4().hex[:6]
    probes = {
        "orders": Writes(args.broker, prefix, 3000, window=1, timeout_s=2.0),
        "contacts": ContactWrites(args.broker, prefix + "C", 3000, window=1, timeout_s=2.0),
    }
    restart = None
    marks = {}
    first_ok = {}
    started = time.monotonic()
    try:
        # A few good answers first
        while (min(p.acked() for p in probes.values()) < 5
               and time.monotonic() - started < 10):
            for probe in probes.values():
                probe.step()
        restart = subprocess.Popen(["docker", "restart", "-t", "30", args.postgres],
                                   stdout=subprocess.DEVNULL)
        marks["restart"] = time.monotonic()
        end = marks["restart"] + args.deadline
        while time.monotonic() < end:
            for name, probe in probes.items():
                before = probe.unavailable + probe.timeouts
                probe.step()
                if name not in marks and probe.unavailable + probe.timeouts > before:
                    # The first refused or unanswered write of this service
                    marks[name] = time.monotonic()
            now = time.monotonic()
            if restart.poll() is not None and "pg_ready" not in marks:
                ready = docker("exec", args.postgres, "pg_isready", "-q", "-h", "127.0.0.1",
                               check=False).returncode == 0
                if ready:
                    marks["pg_ready"] = now
            if "pg_ready" in marks:
                for name, probe in probes.items():
                    last = max((r["acked"] for r in probe.requests if r["acked"]), default=0)
                    if name not in first_ok and last > marks["pg_ready"]:
                        first_ok[name] = last
            if len(first_ok) == len(probes):
                break
            time.sleep(0.1)
    finally:
        if restart is not None:
            restart.wait(timeout=60)
        for probe in probes.values():
            probe.close()
    if "pg_ready" not in marks:
        say("pg-restart: PostgreSQL not accepting connections %d s after the restart" % args.deadline)
        return 1
    figures.add("pg_restart_down_s", "%.1f (restart issued until pg_isready)"
                % (marks["pg_ready"] - marks["restart"]))
    failed = 0
    for name, probe in probes.items():
        if name not in first_ok:
            say("pg-restart: no write to %s succeeded within %d s of the restart" % (name, args.deadline))
            failed = 1
            continue
        figures.add("pg_restart_%s_first_ok_after_ready_s" % name,
                    "%.1f" % (first_ok[name] - marks["pg_ready"]))
        if name in marks:
            figures.add("pg_restart_%s_client_outage_s" % name,
                        "%.1f (first refused write until the next success)"
                        % (first_ok[name] - marks[name]))
        if probe.errors:
            say("pg-restart: %s: %s" % (name, "; ".join(probe.errors[:5])))
            failed = 1
    if failed:
        return 1

    # And every orders instance serves again, within the bound
    since = docker_now()
    end = time.monotonic() + args.deadline
    counts = {}
    batches = 0
    while time.monotonic() < end:
        batch = Writes(args.broker, "%sB%d" % (prefix, batches), 30, window=12, timeout_s=2.0)
        batches += 1
        try:
            batch.run(20)
        finally:
            batch.close()
        time.sleep(0.5)
        ids = {r["id"] for r in batch.requests}
        for cid, n in served_by(containers, ids, since).items():
            counts[cid] = counts.get(cid, 0) + n
        if all(counts.get(cid, 0) > 0 for cid in containers):
            break
    figures.add("pg_restart_all_orders_instances_ok_after_ready_s",
                "%.1f" % (time.monotonic() - marks["pg_ready"]))
    if not all(counts.get(cid, 0) > 0 for cid in containers):
        say("pg-restart: not every orders instance served again: %s" % counts)
        return 1
    restarts = {cid[:12]: docker("inspect", "-f", "{{.RestartCount}}", cid).stdout.strip()
                for cid in containers}
    say("pg-restart: contacts and every orders instance serve again (restart counts %s)" % restarts)
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("scenario", choices=["spread", "kill", "pg-restart"])
    parser.add_argument("--broker", required=True)
    parser.add_argument("--containers", required=True, help="the orders container ids, comma-separated")
    parser.add_argument("--postgres", help="the postgres container id")
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--victim", type=int, default=1, help="index of the container to kill")
    parser.add_argument("--how", choices=["docker-kill", "crash"], default="docker-kill")
    parser.add_argument("--window", type=int, default=48, help="events in flight")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds before a resend")
    parser.add_argument("--deadline", type=int, default=90, help="bound in seconds for each wait")
    parser.add_argument("--figures", help="file the figures are appended to")
    args = parser.parse_args()
    figures = Figures(args.figures)
    scenario = {"spread": spread, "kill": kill, "pg-restart": pg_restart}[args.scenario]
    return scenario(args, figures)


if __name__ == "__main__":
    sys.exit(main())
