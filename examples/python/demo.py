"""Register, heartbeat, discover and deregister through a client generated from the committed
OpenAPI document with openapi-python-client. Nothing here is hand-written HTTP.

    openapi-python-client generate --path openapi/openapi.json \
        --output-path target/generated/python --overwrite
    PYTHONPATH=target/generated/python python examples/python/demo.py http://127.0.0.1:9000

Each step checks the answer and the program exits non-zero at the first surprise, so CI can
run it against a live control plane.
"""

import sys

from waypost_control_plane_client import Client
from waypost_control_plane_client.api.discovery import discover, services
from waypost_control_plane_client.api.registry import deregister, drain, heartbeat, register
from waypost_control_plane_client.models import (
    DiscoverResponse,
    DrainRequest,
    HeartbeatRequest,
    HeartbeatResponse,
    BatchHeartbeatResponse,
    InstanceRef,
    Problem,
    RegisterRequest,
    RegisterResponse,
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

    # Rich form: explicit id, host and port, tags, TTL.
    rich = register.sync_detailed(
        client=client,
        body=RegisterRequest(
            service="py-demo", id="py-2", host="127.0.0.1", port=8002, tags=["v2"], ttl_seconds=60
        ),
    )
    expect(rich.status_code == 201 and rich.parsed.instance.tags == ["v2"], "the rich form stored")

    beat = heartbeat.sync(client=client, body=HeartbeatRequest(service="py-demo", id=instance_id))
    expect(isinstance(beat, HeartbeatResponse) and beat.status == "ok", "a renewed TTL")
    batch = heartbeat.sync(
        client=client,
        body=HeartbeatRequest(
            instances=[
                InstanceRef(service="py-demo", id="py-2"),
                InstanceRef(service="py-demo", id="nobody"),
            ]
        ),
    )
    expect(
        isinstance(batch, BatchHeartbeatResponse) and (batch.renewed, batch.failed) == (1, 1),
        "a batch heartbeat reporting each entry",
    )

    found = discover.sync(client=client, service="py-demo")
    expect(isinstance(found, DiscoverResponse) and found.count == 2, "two instances discovered")
    tagged = discover.sync(client=client, service="py-demo", tag="v2")
    expect(tagged.count == 1 and tagged.instances[0].id == "py-2", "the tag filter")

    drained = drain.sync_detailed(
        client=client, body=DrainRequest(service="py-demo", id="py-2", draining=True)
    )
    expect(drained.status_code == 200, "py-2 draining")
    expect(discover.sync(client=client, service="py-demo").count == 1, "draining leaves discovery")

    listing = services.sync(client=client)
    summary = listing.services.additional_properties["py-demo"]
    expect(summary.total_instances == 2 and summary.active_instances == 1, "the services summary")

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
