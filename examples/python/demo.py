"""Register, heartbeat, discover (with repeated tags and metadata filters) and deregister
through a client generated from the committed OpenAPI document with openapi-python-client.
Nothing here is hand-written HTTP.

    openapi-python-client generate --path openapi/openapi.json \
        --output-path target/generated/python --overwrite
    PYTHONPATH=target/generated/python python examples/python/demo.py http://127.0.0.1:9000

Each step checks the answer and the program exits non-zero at the first surprise, so CI can
run it against a live control plane.
"""

import sys

from waypost_control_plane_client import Client
from waypost_control_plane_client.api.discovery import (
    delete_policy,
    discover,
    explain,
    get_policy,
    services,
    set_policy,
)
from waypost_control_plane_client.api.nodes import list_, propagation, report
from waypost_control_plane_client.api.registry import deregister, drain, heartbeat, register
from waypost_control_plane_client.models import (
    DiscoverResponse,
    DrainRequest,
    HeartbeatEntry,
    HeartbeatRequest,
    HeartbeatResponse,
    BatchHeartbeatResponse,
    InstanceRef,
    NodeReport,
    NodeState,
    Problem,
    RegisterRequest,
    RegisterRequestMetadata,
    RegisterResponse,
    RegisterWait,
    ServicePolicy,
)


def expect(condition: bool, what: str) -> None:
    if not condition:
        sys.exit(f"demo.py: expected {what}")
    print(f"ok: {what}")


def main(base_url: str) -> None:
    client = Client(base_url=base_url, raise_on_unexpected_status=True)

    # Seed form: just a service and an address.
    answer = register.sync_detailed(
        client=client,
        body=RegisterRequest(service="py-demo", address="http://127.0.0.1:8001"),
    )
    expect(answer.status_code == 201, "201 for a new registration")
    expect(isinstance(answer.parsed, RegisterResponse), "a RegisterResponse")
    instance_id = answer.parsed.instance.id
    expect(instance_id == "127.0.0.1:8001", "the id derived from the address")

    # Rich form: explicit id, host and port, tags, metadata, TTL.
    rich = register.sync_detailed(
        client=client,
        body=RegisterRequest(
            service="py-demo",
            id="py-2",
            host="127.0.0.1",
            port=8002,
            tags=["v2", "eu"],
            metadata=RegisterRequestMetadata.from_dict({"zone": "a", "tier": "web"}),
            ttl_seconds=60,
        ),
    )
    expect(
        rich.status_code == 201 and rich.parsed.instance.tags == ["eu", "v2"],
        "the rich form stored (tags sorted)",
    )

    beat = heartbeat.sync(client=client, body=HeartbeatRequest(service="py-demo", id=instance_id))
    expect(isinstance(beat, HeartbeatResponse) and beat.status == "ok", "a renewed TTL")
    batch = heartbeat.sync(
        client=client,
        body=HeartbeatRequest(
            instances=[
                HeartbeatEntry(service="py-demo", id="py-2"),
                HeartbeatEntry(service="py-demo", id="nobody"),
            ]
        ),
    )
    expect(
        isinstance(batch, BatchHeartbeatResponse) and (batch.renewed, batch.failed) == (1, 1),
        "a batch heartbeat reporting each entry",
    )

    found = discover.sync(client=client, service="py-demo")
    expect(isinstance(found, DiscoverResponse) and found.count == 2, "two instances discovered")
    # `tag` and `meta` repeat: the client sends ?tag=v2&tag=eu&meta=zone:a&meta=tier:web, and
    # every one must match.
    tagged = discover.sync(client=client, service="py-demo", tag=["v2", "eu"])
    expect(tagged.count == 1 and tagged.instances[0].id == "py-2", "two tags, both matching")
    none = discover.sync(client=client, service="py-demo", tag=["v2", "us"])
    expect(none.count == 0, "two tags, one not matching")
    zoned = discover.sync(client=client, service="py-demo", meta=["zone:a", "tier:web"])
    expect(zoned.count == 1 and zoned.instances[0].id == "py-2", "two metadata filters")
    other = discover.sync(client=client, service="py-demo", meta=["zone:b"], tag=["v2"])
    expect(other.count == 0, "a metadata filter with a tag, not matching")
    bad = discover.sync_detailed(client=client, service="py-demo", meta=["no-colon"])
    expect(
        bad.status_code == 400 and isinstance(bad.parsed, Problem) and bad.parsed.code == "invalid_query",
        "400 invalid_query for a metadata filter without KEY:",
    )

    drained = drain.sync_detailed(
        client=client, body=DrainRequest(service="py-demo", id="py-2", draining=True)
    )
    expect(drained.status_code == 200, "py-2 draining")
    expect(discover.sync(client=client, service="py-demo").count == 1, "draining leaves discovery")

    listing = services.sync(client=client)
    summary = listing.services.additional_properties["py-demo"]
    expect(summary.total_instances == 2 and summary.active_instances == 1, "the services summary")

    # Why py-2 is out of default discovery, with the same filters as /discover.
    why = explain.sync(client=client, service="py-demo")
    py2 = next(i for i in why.instances if i.instance.id == "py-2")
    expect(not py2.included and py2.reasons[0].code == "draining", "explain: py-2 is out, draining")

    # A sidecar reports itself; a write that waits for it times out (it never applies
    # anything), is done all the same, and names it as behind.
    reported = report.sync_detailed(
        node="py-node", client=client, body=NodeReport(version="0.1.0", revision=0, dns=["127.0.0.1:8600"])
    )
    expect(reported.status_code == 200 and reported.parsed.state == NodeState.LIVE, "a sidecar reported")
    expect(any(n.node == "py-node" for n in list_.sync(client=client).nodes), "the sidecars listed")
    waited = register.sync_detailed(
        client=client,
        body=RegisterRequest(service="py-demo", address="127.0.0.1:7003"),
        wait=RegisterWait.PROPAGATED,
        timeout="200ms",
    )
    behind = waited.parsed.propagation
    expect(
        waited.status_code == 201 and not behind.complete and behind.behind[0].node == "py-node",
        "a write that waits names the sidecar behind",
    )
    seen = propagation.sync(client=client, revision=waited.parsed.revision, node=["py-node"])
    expect(not seen.complete and seen.revision == waited.parsed.revision, "/propagation agrees")
    kept = set_policy.sync(
        service="py-demo", client=client, body=ServicePolicy(never_empty=True, min_healthy_percent=30)
    )
    expect(kept.policy.never_empty and kept.policy.min_healthy_percent == 30, "a protection policy")
    read = get_policy.sync(service="py-demo", client=client)
    expect(read.policy.never_empty, "the policy read back")
    dropped = delete_policy.sync(service="py-demo", client=client)
    expect(not dropped.policy, "the policy removed")

    for ref in (InstanceRef(service="py-demo", id=instance_id), InstanceRef(service="py-demo", id="py-2")):
        gone = deregister.sync_detailed(client=client, body=ref)
        expect(gone.status_code == 200, f"{ref.id} deregistered")
    again = deregister.sync_detailed(client=client, body=InstanceRef(service="py-demo", id="py-2"))
    expect(
        again.status_code == 404
        and isinstance(again.parsed, Problem)
        and again.parsed.code == "instance_not_found",
        "404 instance_not_found for an unknown instance",
    )
    invalid = register.sync_detailed(
        client=client, body=RegisterRequest(service="Not_A_Label", address="127.0.0.1:1")
    )
    expect(
        invalid.status_code == 400 and invalid.parsed.code == "invalid_service_name",
        "400 invalid_service_name as a typed Problem",
    )
    print("demo.py: every step answered as the OpenAPI document says")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:9000")
