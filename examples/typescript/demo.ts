// Register, heartbeat, discover and deregister with types generated from the committed OpenAPI
// document by openapi-typescript. The compiler checks every body and answer against the
// document; `npm run demo -- URL` then runs it against a live control plane.
//
//   npm ci && npm run generate && npm run check          # type-check only
//   npm run build && npm run demo -- http://127.0.0.1:9000

import type { components, paths } from "./generated/waypost.js";

type Schemas = components["schemas"];
type Op<P extends keyof paths, M extends "get" | "post"> = NonNullable<paths[P][M]>;
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
type NotFound = Answer<Op<"/deregister", "post">, 404, "application/problem+json">;

const base = process.argv[2] ?? "http://127.0.0.1:9000";

async function call<T>(method: "GET" | "POST", path: string, body?: unknown): Promise<[number, T]> {
  const init: RequestInit = { method, headers: { "content-type": "application/json" } };
  if (body !== undefined) init.body = JSON.stringify(body);
  const response = await fetch(base + path, init);
  return [response.status, (await response.json()) as T];
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
  tags: ["v1"],
  ttl_seconds: 30,
};
const [created, registered] = await call<RegisterAnswer>("POST", "/register", registration);
expect(created === 201 && registered.instance.id === "127.0.0.1:8001", "a 201 with the derived id");

const beat: Schemas["HeartbeatRequest"] = { service: "ts-demo", id: registered.instance.id };
const [renewedStatus, renewed] = await call<HeartbeatAnswer>("POST", "/heartbeat", beat);
expect(renewedStatus === 200 && "expires_at" in renewed, "a renewed TTL with its deadline");

const [, found] = await call<DiscoverAnswer>("GET", "/discover/ts-demo?tag=v1");
const first = found.instances[0];
expect(found.count === 1 && first !== undefined && first.uptime_seconds >= 0, "one instance found");

const [, listing] = await call<ServicesAnswer>("GET", "/services");
expect(listing.services["ts-demo"]?.active_instances === 1, "the services summary");

const ref: Schemas["InstanceRef"] = { service: "ts-demo", id: registered.instance.id };
const [goneStatus, gone] = await call<DeregisterAnswer>("POST", "/deregister", ref);
expect(goneStatus === 200 && gone.status === "deregistered", "deregistered");
const [againStatus, again] = await call<NotFound>("POST", "/deregister", ref);
const code: Schemas["ErrorCode"] = again.code;
expect(againStatus === 404 && code === "instance_not_found", "404 instance_not_found");
console.log("demo.ts: every step answered as the OpenAPI document says");
