// Register, heartbeat, discover (with repeated tags and metadata filters) and deregister with
// types generated from the committed OpenAPI document by openapi-typescript. The compiler checks
// every body, query and answer against the document; `npm run demo -- URL` then runs it against
// a live control plane.
//
//   npm ci && npm run generate && npm run check          # type-check only
//   npm run build && npm run demo -- http://127.0.0.1:9000

import type { components, paths } from "./generated/waypost.js";

type Schemas = components["schemas"];
type Op<P extends keyof paths, M extends "get" | "post" | "put"> = NonNullable<paths[P][M]>;
type Answer<O, S extends number, C extends string = "application/json"> = O extends {
  responses: { [K in S]: { content: { [T in C]: infer B } } };
}
  ? B
  : never;

type RegisterAnswer = Answer<Op<"/register", "post">, 201>;
type HeartbeatAnswer = Answer<Op<"/heartbeat", "post">, 200>;
type DiscoverAnswer = Answer<Op<"/discover/{service}", "get">, 200>;
type ServicesAnswer = Answer<Op<"/services", "get">, 200>;
type DeregisterAnswer = Answer<Op<"/deregister", "post">, 200>;
type ExplainAnswer = Answer<Op<"/discover/{service}/explain", "get">, 200>;
type NodeAnswer = Answer<Op<"/nodes/{node}", "put">, 200>;
type NodesAnswer = Answer<Op<"/nodes", "get">, 200>;
type PropagationAnswer = Answer<Op<"/propagation", "get">, 200>;
type NotFound = Answer<Op<"/deregister", "post">, 404, "application/problem+json">;
type DiscoverQuery = NonNullable<Op<"/discover/{service}", "get">["parameters"]["query"]>;

const base = process.argv[2] ?? "http://127.0.0.1:9000";

async function call<T>(method: "GET" | "POST" | "PUT", path: string, body?: unknown): Promise<[number, T]> {
  const init: RequestInit = { method, headers: { "content-type": "application/json" } };
  if (body !== undefined) init.body = JSON.stringify(body);
  const response = await fetch(base + path, init);
  return [response.status, (await response.json()) as T];
}

// The document declares `tag` and `meta` as arrays in form style, exploded: one `key=value`
// pair per element (`?tag=v1&tag=eu`), which is what URLSearchParams writes when appended to.
function query(params: DiscoverQuery): string {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    for (const item of Array.isArray(value) ? value : [value]) {
      if (item !== undefined) search.append(key, String(item));
    }
  }
  const text = search.toString();
  return text === "" ? "" : `?${text}`;
}

function expect(condition: boolean, what: string): void {
  if (!condition) {
    console.error(`demo.ts: expected ${what}`);
    process.exit(1);
  }
  console.log(`ok: ${what}`);
}

const registration: Schemas["RegisterRequest"] = {
  service: "ts-demo",
  address: "http://127.0.0.1:8001",
  tags: ["v1", "eu"],
  metadata: { zone: "a", tier: "web" },
  ttl_seconds: 30,
};
const [created, registered] = await call<RegisterAnswer>("POST", "/register", registration);
expect(created === 201 && registered.instance.id === "127.0.0.1:8001", "a 201 with the derived id");

const beat: Schemas["HeartbeatRequest"] = { service: "ts-demo", id: registered.instance.id };
const [renewedStatus, renewed] = await call<HeartbeatAnswer>("POST", "/heartbeat", beat);
expect(renewedStatus === 200 && "expires_at" in renewed, "a renewed TTL with its deadline");

const both: DiscoverQuery = { tag: ["v1", "eu"], meta: ["zone:a", "tier:web"] };
const [, found] = await call<DiscoverAnswer>("GET", `/discover/ts-demo${query(both)}`);
const first = found.instances[0];
expect(
  found.count === 1 && first !== undefined && first.uptime_seconds >= 0,
  "one instance found by two tags and two metadata filters",
);
const [, none] = await call<DiscoverAnswer>("GET", `/discover/ts-demo${query({ tag: ["v1", "us"] })}`);
expect(none.count === 0, "no instance has both v1 and us");
const [, other] = await call<DiscoverAnswer>("GET", `/discover/ts-demo${query({ meta: ["zone:b"] })}`);
expect(other.count === 0, "no instance in zone b");

const [, listing] = await call<ServicesAnswer>("GET", "/services");
expect(listing.services["ts-demo"]?.active_instances === 1, "the services summary");

const [, why] = await call<ExplainAnswer>("GET", `/discover/ts-demo/explain${query({ tag: ["us"] })}`);
expect(
  why.included === 0 && why.instances[0]?.reasons[0]?.code === "tag_mismatch",
  "explain: out, for the tag it lacks",
);

const sidecar: Schemas["NodeReport"] = { version: "0.1.0", revision: 0, dns: ["127.0.0.1:8600"] };
const [reportStatus, node] = await call<NodeAnswer>("PUT", "/nodes/ts-node", sidecar);
expect(reportStatus === 200 && node.state === "live", "a sidecar reported");
const [, nodes] = await call<NodesAnswer>("GET", "/nodes");
expect(nodes.nodes.some((n) => n.node === "ts-node"), "the sidecars listed");
const [, seen] = await call<PropagationAnswer>(
  "GET",
  `/propagation?revision=${registered.revision}&node=ts-node`,
);
expect(!seen.complete && seen.behind[0]?.node === "ts-node", "ts-node has not applied the registration");

const ref: Schemas["InstanceRef"] = { service: "ts-demo", id: registered.instance.id };
const [goneStatus, gone] = await call<DeregisterAnswer>("POST", "/deregister", ref);
expect(goneStatus === 200 && gone.status === "deregistered", "deregistered");
const [againStatus, again] = await call<NotFound>("POST", "/deregister", ref);
const code: Schemas["ErrorCode"] = again.code;
expect(againStatus === 404 && code === "instance_not_found", "404 instance_not_found");
console.log("demo.ts: every step answered as the OpenAPI document says");
