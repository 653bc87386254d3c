"""A proxyless gRPC client (grpcio's own xDS support) against Waypost's xDS listener.

Started by control-plane/tests/xds.rs with a running control plane:
    python grpc_client.py --api http://127.0.0.1:PORT --xds 127.0.0.1:PORT [--token T]

Runs gRPC echo servers in this process (generic handlers, no generated code), registers them
in Waypost over the HTTP API, and calls `xds:///echo` through one channel for the whole run:
both instances get calls in proportion to their weights; draining one, then deregistering it,
moves every new call to the other within a second; a third registered instance starts getting
calls without a new channel. Every wait is on a condition with a deadline. Exits non-zero
with a message on the first failed expectation.
"""

import argparse
import json
import os
import sys
import time
import urllib.request
from concurrent import futures

METHOD = "/waypost.test.Echo/Say"
# The time the issue allows for a change to reach every new call.
MOVE_DEADLINE = 1.0
# How long the client may take to get its first answer (connecting, three xDS round trips).
FIRST_CALL_DEADLINE = 20.0
CALLS = 400
# Share of calls the heavier instance must get: its weight share (0.75) within this tolerance.
TOLERANCE = 0.1


def fail(message):
    print(f"xds check: FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--api", required=True)
    p.add_argument("--xds", required=True)
    p.add_argument("--token")
    return p.parse_args()


args = parse_args()

# The bootstrap must be in place before grpc creates its xDS client.
bootstrap = {
    "xds_servers": [
        {
            "server_uri": args.xds,
            "channel_creds": [{"type": "insecure"}],
            "server_features": ["xds_v3"],
        }
    ],
    "node": {"id": "xds-check", "locality": {"zone": "test"}},
}
os.environ["GRPC_XDS_BOOTSTRAP_CONFIG"] = json.dumps(bootstrap)

import grpc  # noqa: E402  (after the bootstrap is set)


def api(path, body):
    req = urllib.request.Request(
        args.api + path,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    if args.token:
        req.add_header("authorization", f"Bearer {args.token}")
    with urllib.request.urlopen(req, timeout=10) as res:
        return json.loads(res.read() or b"null")


def echo_server(name):
    """A gRPC server on 127.0.0.1:0 whose one method answers with its name."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handler = grpc.method_handlers_generic_handler(
        "waypost.test.Echo",
        {"Say": grpc.unary_unary_rpc_method_handler(lambda req, ctx: name.encode())},
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def register(name, port, weight, zone=None):
    body = {
        "service": "echo",
        "id": name,
        "host": "127.0.0.1",
        "port": port,
        "weight": weight,
        "ttl_seconds": 600,
    }
    if zone:
        body["metadata"] = {"zone": zone}
    api("/register", body)


channel = grpc.insecure_channel("xds:///echo")
say = channel.unary_unary(METHOD)


def call():
    return say(b"hi", timeout=5).decode()


def calls(n):
    counts = {}
    for _ in range(n):
        who = call()
        counts[who] = counts.get(who, 0) + 1
    return counts


def wait_until(what, deadline, probe):
    """Calls `probe` until it is true; fails after `deadline` seconds."""
    end = time.monotonic() + deadline
    last = None
    while time.monotonic() < end:
        try:
            if probe():
                return
        except grpc.RpcError as err:
            last = f"{err.code()}: {err.details()}"
        time.sleep(0.01)
    fail(f"{what} not within {deadline}s (last error: {last})")


def only(name, deadline):
    """Every call goes to `name` within `deadline`: 20 in a row, the first of them in time."""
    started = time.monotonic()
    streak = 0
    while streak < 20:
        who = call()
        if who == name:
            streak += 1
            continue
        streak = 0
        if time.monotonic() - started > deadline:
            fail(f"a call still went to {who} {time.monotonic() - started:.2f}s after the change")


servers = {}
# Two zones (two localities): weights count across them.
for name, weight, zone in (("a", 3, "x"), ("b", 1, "y")):
    servers[name] = echo_server(name)
    register(name, servers[name][1], weight, zone)

wait_until("a first answer over xDS", FIRST_CALL_DEADLINE, lambda: call() in ("a", "b"))
counts = calls(CALLS)
share = counts.get("a", 0) / CALLS
print(f"xds check: weights 3:1 gave {counts} (share of a {share:.2f})")
if not counts.get("b"):
    fail(f"b got no calls: {counts}")
if abs(share - 0.75) > TOLERANCE:
    fail(f"a's share {share:.2f} is not 0.75 within {TOLERANCE}")

api("/drain", {"service": "echo", "id": "b"})
only("a", MOVE_DEADLINE)
print("xds check: draining b moved every call to a")

api("/drain", {"service": "echo", "id": "b", "draining": False})
wait_until("b taking calls again after undrain", 10, lambda: "b" in calls(20))
api("/deregister", {"service": "echo", "id": "b"})
only("a", MOVE_DEADLINE)
print("xds check: deregistering b moved every call to a")

servers["c"] = echo_server("c")
register("c", servers["c"][1], 1)  # no zone: the default locality
wait_until("c taking calls", 10, lambda: "c" in calls(20))
print("xds check: c, registered later, gets calls on the same channel")

channel.close()
for server, _ in servers.values():
    server.stop(None)
print("xds check: ok")
