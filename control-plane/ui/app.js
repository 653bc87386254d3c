// Waypost dashboard: plain JavaScript over the control plane's JSON API, no build step.
//
// One `/watch` stream (all services) keeps a copy of every instance: a `snapshot` event
// replaces it, `upsert` and `remove` events change it, and the page re-renders from it. The
// stream is read with fetch rather than EventSource because EventSource cannot send an
// Authorization header. After a lost stream the page reconnects without Last-Event-ID and
// takes a fresh snapshot, which is always correct and costs one snapshot per reconnect.
//
// What the stream does not carry is polled while its page is open: /health (the banner),
// /discover/{service}/explain (heartbeat timing, reasons, recent departures), /cluster and
// /nodes. Data is put into the page with textContent only, never as HTML.

const TOKEN_KEY = "waypost.token";
const HEALTH_EVERY_MS = 5000;
const PAGE_POLL_MS = 2000;
const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 10000;
// The control plane sends a keep-alive every 15 s by default (`--watch-keepalive`): a stream
// silent for longer than this is dead (a dropped connection need not close it) and is reopened.
const SILENT_MS = 45000;

const state = {
  services: new Map(), // service name -> Map(instance id -> instance)
  revision: 0,
  stream: "connecting", // connecting | live | reconnecting | unauthorized | forbidden
  health: null,
  healthError: null,
  explain: null, // the current service page's explain answer
  cluster: null,
  nodes: null,
  pageError: null, // a problem from the current page's own polling
};

// ---------------------------------------------------------------------------------------
// Talking to the API

/** A refusal from the API: an RFC 9457 problem (`code`, `detail`) with its HTTP status. */
class Problem extends Error {
  constructor(status, body, fallback) {
    const code = body && body.code ? body.code : `http_${status}`;
    const detail = (body && (body.detail || body.title)) || fallback || "no detail";
    super(`${status} ${code}: ${detail}`);
    this.status = status;
    this.code = code;
    this.detail = detail;
  }
}

function authHeaders(extra) {
  const headers = { ...extra };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.authorization = `Bearer ${token}`;
  return headers;
}

async function api(path, { method = "GET", body, signal } = {}) {
  const headers = authHeaders({ accept: "application/json" });
  if (body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
    cache: "no-store",
  });
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!res.ok) throw new Problem(res.status, data, text.slice(0, 200));
  return data;
}

// ---------------------------------------------------------------------------------------
// The change stream

let streamAbort = null;
let wakeStream = null; // resolves the wait between reconnects (a new token: try now)

function put(instance) {
  let instances = state.services.get(instance.service);
  if (!instances) {
    instances = new Map();
    state.services.set(instance.service, instances);
  }
  const old = instances.get(instance.id);
  // An answer to our own write may arrive before the stream's event for it; never go back.
  if (!old || old.revision <= instance.revision) instances.set(instance.id, instance);
}

function apply(kind, event) {
  switch (kind) {
    case "snapshot":
      // A new stream's whole state, perhaps of a restarted control plane whose revisions
      // start again: it replaces everything, the revision included.
      state.services = new Map();
      state.revision = event.revision;
      for (const instance of event.instances) put(instance);
      break;
    case "upsert":
      put(event.instance);
      break;
    case "remove": {
      const instances = state.services.get(event.service);
      if (instances) {
        instances.delete(event.id);
        if (instances.size === 0) state.services.delete(event.service);
      }
      break;
    }
    default:
      return;
  }
  state.revision = Math.max(state.revision, event.revision);
  const service = kind === "upsert" ? event.instance.service : event.service;
  if (route().page === "service" && (kind === "snapshot" || service === route().service)) {
    refreshSoon();
  }
  renderSoon();
}

/** Reads server-sent events from a fetch body, calling `onEvent(kind, data)` for each. */
async function readEvents(body, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    let timer;
    const silent = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`nothing for ${SILENT_MS / 1000} s`)), SILENT_MS);
    });
    let read;
    try {
      read = await Promise.race([reader.read(), silent]);
    } catch (err) {
      reader.cancel().catch(() => {});
      throw err;
    } finally {
      clearTimeout(timer);
    }
    const { value, done } = read;
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let kind = "message";
      const data = [];
      for (const line of frame.split("\n")) {
        if (line.startsWith(":")) continue; // a keep-alive comment
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const rest = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") kind = rest;
        else if (field === "data") data.push(rest);
      }
      if (data.length) onEvent(kind, JSON.parse(data.join("\n")));
    }
  }
}

async function follow() {
  let retry = RETRY_MIN_MS;
  for (;;) {
    streamAbort = new AbortController();
    try {
      const res = await fetch("/watch", {
        headers: authHeaders({ accept: "text/event-stream" }),
        signal: streamAbort.signal,
        cache: "no-store",
      });
      if (!res.ok) {
        const body = await res.json().catch(() => null);
        throw new Problem(res.status, body);
      }
      setStream("live");
      retry = RETRY_MIN_MS;
      await readEvents(res.body, apply);
      setStream("reconnecting", "the stream ended");
    } catch (err) {
      if (err instanceof Problem && (err.status === 401 || err.status === 403)) {
        setStream(err.status === 401 ? "unauthorized" : "forbidden", err.message);
        if (err.status === 401) askForToken(err.message);
        await waitForWake(null); // until a new token is given
        continue;
      }
      if (err.name !== "AbortError") setStream("reconnecting", String(err.message || err));
    }
    await waitForWake(retry);
    retry = Math.min(retry * 2, RETRY_MAX_MS);
  }
}

function waitForWake(ms) {
  return new Promise((resolve) => {
    const timer = ms === null ? null : setTimeout(done, ms);
    function done() {
      if (timer !== null) clearTimeout(timer);
      wakeStream = null;
      resolve();
    }
    wakeStream = done;
  });
}

function restartStream() {
  if (streamAbort) streamAbort.abort();
  if (wakeStream) wakeStream();
}

function setStream(stream, why) {
  state.stream = stream;
  const el = document.getElementById("stream");
  el.className = `stream ${stream === "live" ? "live" : "down"}`;
  el.textContent = {
    connecting: "Connecting…",
    live: "Live",
    reconnecting: `Reconnecting (${why})…`,
    unauthorized: "Needs a token",
    forbidden: "This token may not watch",
  }[stream];
  if (stream === "live") el.textContent += ` · revision ${state.revision}`;
  if (stream === "unauthorized" || stream === "forbidden") showAlert(why);
}

// ---------------------------------------------------------------------------------------
// Polling what the stream does not carry

async function pollHealth() {
  try {
    state.health = await api("/health");
    state.healthError = null;
  } catch (err) {
    state.healthError = String(err.message || err);
  }
  renderBanners();
  setTimeout(pollHealth, HEALTH_EVERY_MS);
}

let pageTimer = null;
let refreshTimer = null;
let pageGeneration = 0;

/** Loads what the current page polls, now and every PAGE_POLL_MS while it stays open. */
async function refreshPage() {
  clearTimeout(pageTimer);
  const generation = pageGeneration;
  const r = route();
  try {
    if (r.page === "service") {
      state.explain = await api(
        `/discover/${encodeURIComponent(r.service)}/explain?stale`,
      );
    } else if (r.page === "cluster") {
      state.cluster = await api("/cluster");
    } else if (r.page === "nodes") {
      state.nodes = await api("/nodes");
    } else {
      return;
    }
    state.pageError = null;
  } catch (err) {
    state.pageError = err;
  }
  if (generation !== pageGeneration) return; // the reader moved on meanwhile
  renderSoon();
  pageTimer = setTimeout(refreshPage, PAGE_POLL_MS);
}

function refreshSoon() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refreshPage, 150);
}

// ---------------------------------------------------------------------------------------
// Building the page

/** `h("td", {class: "num"}, "3")`: an element with attributes and text or element children. */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** A table whose cells carry their column's name, for the narrow-screen cards. */
function table(caption, columns, rows, empty) {
  const head = h("tr", null, columns.map((c) => h("th", { scope: "col", class: c.num ? "num" : null }, c.label)));
  const body = rows.length
    ? rows.map((cells) =>
        h("tr", null, cells.map((cell, i) =>
          h(i === 0 ? "th" : "td", {
            scope: i === 0 ? "row" : null,
            class: columns[i].num ? "num" : null,
            "data-label": columns[i].label,
          }, i === 0 ? cell : h("div", null, cell)))))
    : [h("tr", null, h("td", { colspan: columns.length, class: "empty" }, empty))];
  return h("div", { class: "table-wrap" },
    h("table", { class: "cards" }, h("caption", null, caption), h("thead", null, head), h("tbody", null, body)));
}

function badge(kind, text) {
  return h("span", { class: `badge ${kind}` }, text);
}

function ago(ms) {
  if (ms < 0) ms = 0;
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return s % 60 ? `${m} min ${s % 60} s` : `${m} min`;
  const hours = Math.floor(m / 60);
  if (hours < 48) return `${hours} h ${m % 60} min`;
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

function since(timestamp) {
  return timestamp ? ago(Date.now() - Date.parse(timestamp)) : null;
}

/** An instance's state, each instance in exactly one: draining, then critical, else up. */
function stateOf(instance) {
  if (instance.status === "draining") return "draining";
  if (instance.health === "critical" || instance.health === "flapping") return "critical";
  return "up";
}

function healthBadge(instance) {
  const health = instance.health || "passing";
  return badge(health === "passing" ? "ok" : "bad", health);
}

function summaries() {
  const rows = [];
  for (const [name, instances] of state.services) {
    const counts = { up: 0, draining: 0, critical: 0 };
    const tags = new Set();
    let vip = null;
    let policy = null;
    for (const instance of instances.values()) {
      counts[stateOf(instance)] += 1;
      for (const tag of instance.tags) tags.add(tag);
      vip = vip || instance.vip || null;
      policy = policy || instance.policy || null;
    }
    rows.push({ name, total: instances.size, ...counts, tags: [...tags].sort(), vip, policy });
  }
  rows.sort((a, b) => a.name.localeCompare(b.name));
  return rows;
}

// Filters live in the address (#/services?name=&tag=&health=), so that Back and a shared link
// keep them.
function route() {
  const hash = location.hash.replace(/^#/, "") || "/services";
  const [path, query = ""] = hash.split("?");
  const params = new URLSearchParams(query);
  let parts;
  try {
    parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  } catch {
    parts = []; // a malformed address: the services page
  }
  if (parts[0] === "services" && parts.length === 2) return { page: "service", service: parts[1], params };
  if (parts[0] === "cluster") return { page: "cluster", params };
  if (parts[0] === "nodes") return { page: "nodes", params };
  return { page: "services", params };
}

function servicesPage(r) {
  const name = r.params.get("name") || "";
  const tag = r.params.get("tag") || "";
  const health = r.params.get("health") || "any";
  const all = summaries();
  const rows = all.filter((s) =>
    s.name.toLowerCase().includes(name.toLowerCase()) &&
    (!tag || s.tags.includes(tag)) &&
    (health === "any" ||
      (health === "all-up" && s.up === s.total) ||
      (health === "critical" && s.critical > 0) ||
      (health === "draining" && s.draining > 0) ||
      (health === "none-up" && s.up === 0)));
  const allTags = [...new Set(all.flatMap((s) => s.tags))].sort();
  const caption = rows.length === all.length
    ? `${all.length} services at revision ${state.revision}`
    : `${rows.length} of ${all.length} services match`;
  return [
    h("h1", { tabindex: -1 }, "Services"),
    filtersForm(name, tag, health, allTags),
    table(caption, [
      { label: "Service" }, { label: "Instances", num: true }, { label: "Up", num: true },
      { label: "Draining", num: true }, { label: "Critical", num: true }, { label: "Tags" }, { label: "VIP" },
    ], rows.map((s) => [
      h("a", { href: `#/services/${encodeURIComponent(s.name)}` }, s.name),
      s.total,
      s.up,
      s.draining ? badge("warn", s.draining) : "0",
      s.critical ? badge("bad", s.critical) : "0",
      s.tags.map((t) => h("span", { class: "tag" }, t)),
      s.vip ? h("span", { class: "mono" }, s.vip) : "",
    ]), all.length ? "No service matches the filter." : "No services are registered."),
  ];
}

// The filter form is built once per visit to the page and kept across re-renders, so that
// typing is never interrupted; it writes the address, which re-renders the table.
let filterForm = null;

function filtersForm(name, tag, health, allTags) {
  if (filterForm) {
    const list = filterForm.querySelector("#known-tags");
    list.replaceChildren(...allTags.map((t) => h("option", { value: t })));
    return filterForm;
  }
  const update = () => {
    const params = new URLSearchParams();
    const data = new FormData(filterForm);
    for (const key of ["name", "tag", "health"]) {
      const value = String(data.get(key) || "").trim();
      if (value && !(key === "health" && value === "any")) params.set(key, value);
    }
    const query = params.toString();
    history.replaceState(null, "", `#/services${query ? `?${query}` : ""}`);
    render();
  };
  filterForm = h("form", { class: "filters", role: "search", "aria-label": "Filter services", onsubmit: (e) => e.preventDefault() },
    h("div", null, h("label", { for: "filter-name" }, "Name contains"),
      h("input", { id: "filter-name", name: "name", type: "search", value: name, oninput: update })),
    h("div", null, h("label", { for: "filter-tag" }, "Tag"),
      h("input", { id: "filter-tag", name: "tag", type: "search", list: "known-tags", value: tag, oninput: update }),
      h("datalist", { id: "known-tags" }, allTags.map((t) => h("option", { value: t })))),
    h("div", null, h("label", { for: "filter-health" }, "Health"),
      h("select", { id: "filter-health", name: "health", onchange: update },
        [["any", "Any"], ["all-up", "All instances up"], ["critical", "Some critical"],
          ["draining", "Some draining"], ["none-up", "None up"]]
          .map(([value, label]) => h("option", { value, selected: value === health }, label)))));
  return filterForm;
}

function servicePage(r) {
  const instances = [...(state.services.get(r.service) || new Map()).values()]
    .sort((a, b) => a.id.localeCompare(b.id));
  const explain = state.explain && state.explain.service === r.service ? state.explain : null;
  const explained = new Map();
  const removed = [];
  for (const e of explain ? explain.instances : []) {
    if (e.registered) explained.set(e.instance.id, e);
    else removed.push(e);
  }
  const counts = { up: 0, draining: 0, critical: 0 };
  for (const instance of instances) counts[stateOf(instance)] += 1;
  const first = instances[0];
  const policy = (first && first.policy) || (explain && explain.policy);
  const facts = h("dl", { class: "facts" },
    h("dt", null, "Instances"), h("dd", null, `${instances.length}: ${counts.up} up, ${counts.draining} draining, ${counts.critical} critical`),
    h("dt", null, "VIP"), h("dd", null, (first && first.vip) || "none"),
    h("dt", null, "Policy"), h("dd", null, policy ? policyText(policy) : "none"),
    h("dt", null, "Discover"), h("dd", null, h("a", { href: `/discover/${encodeURIComponent(r.service)}` }, `/discover/${r.service}`)));
  const now = Date.now();
  const rows = instances.map((instance) => {
    const e = explained.get(instance.id);
    // Overdue: the deadline passed, and when the last heartbeat came is no longer known here.
    const heartbeat = !e || e.expires_in_ms === undefined
      ? h("span", { class: "muted" }, "…")
      : e.expires_in_ms === 0
        ? `overdue (TTL ${ago(instance.ttl_seconds * 1000)})`
        : `${ago(instance.ttl_seconds * 1000 - e.expires_in_ms)} ago (expires in ${ago(e.expires_in_ms)})`;
    const reasons = e ? e.reasons.filter((x) => x.excludes) : [];
    const held = e && e.reasons.some((x) => x.code === "held_by_self_preservation");
    return [
      h("span", { class: "mono" }, instance.id),
      h("span", { class: "mono" }, instance.address),
      instance.node || h("span", { class: "muted" }, "none"),
      instance.tags.map((t) => h("span", { class: "tag" }, t)),
      Object.keys(instance.metadata).length
        ? h("ul", { class: "plain" }, Object.entries(instance.metadata).map(([k, v]) => h("li", null, h("span", { class: "mono" }, `${k}=${v}`))))
        : "",
      instance.weight,
      [healthBadge(instance),
        instance.health_since ? h("span", { class: "muted" }, ` for ${since(instance.health_since)}`) : null,
        instance.health_output ? h("span", { class: "output" }, instance.health_output) : null,
        !instance.check && !instance.health_output ? h("span", { class: "output" }, "no check") : null],
      [badge(instance.status === "draining" ? "warn" : "ok", instance.status),
        reasons.length ? h("span", { class: "output" }, reasons.map((x) => x.detail).join("; ")) : null],
      ago(now - Date.parse(instance.registered_at)),
      [heartbeat, held ? [" ", badge("warn", "held by self-preservation")] : null],
      h("div", { class: "actions" },
        instance.status === "draining"
          ? h("button", { type: "button", class: "secondary", "data-key": `undrain:${instance.id}`,
              "aria-label": `Undrain ${instance.id}`, onclick: () => drain(instance, false) }, "Undrain")
          : h("button", { type: "button", class: "secondary", "data-key": `drain:${instance.id}`,
              "aria-label": `Drain ${instance.id}`, onclick: () => drain(instance, true) }, "Drain"),
        h("button", { type: "button", class: "danger", "data-key": `deregister:${instance.id}`,
          "aria-label": `Deregister ${instance.id}`, onclick: () => deregister(instance) }, "Deregister")),
    ];
  });
  const out = [
    h("p", null, h("a", { href: "#/services" }, "← Services")),
    h("h1", { tabindex: -1 }, r.service),
    facts,
    table(`Instances of ${r.service}`, [
      { label: "Instance" }, { label: "Address" }, { label: "Node" }, { label: "Tags" }, { label: "Metadata" },
      { label: "Weight", num: true }, { label: "Health" }, { label: "Status" }, { label: "Age" },
      { label: "Last heartbeat" }, { label: "Actions" },
    ], rows, "No instances are registered."),
  ];
  if (removed.length) {
    out.push(h("h2", null, "Recently removed"),
      table(`Removed in the last ${ago((explain.removed_kept_seconds || 0) * 1000)}`, [
        { label: "Instance" }, { label: "Address" }, { label: "Why" }, { label: "When" }, { label: "By" },
      ], removed.map((e) => {
        const reason = e.reasons[0] || {};
        return [
          h("span", { class: "mono" }, e.instance.id),
          h("span", { class: "mono" }, e.instance.address),
          reason.detail || reason.code || "",
          reason.since ? `${since(reason.since)} ago` : "",
          reason.by || "",
        ];
      }), ""));
  }
  return out;
}

function policyText(policy) {
  const parts = [];
  if (policy.min_healthy_percent !== undefined && policy.min_healthy_percent !== null) {
    parts.push(`at least ${policy.min_healthy_percent}% healthy`);
  }
  if (policy.never_empty) parts.push("never empty");
  return parts.join(", ") || "none";
}

function clusterPage() {
  const c = state.cluster;
  if (!c) return [h("h1", { tabindex: -1 }, "Cluster"), h("p", { class: "muted" }, "Loading…")];
  return [
    h("h1", { tabindex: -1 }, "Cluster"),
    h("dl", { class: "facts" },
      h("dt", null, "This member"), h("dd", null, `${c.node_id} (${c.state})`),
      h("dt", null, "Leader"), h("dd", null, c.leader === null || c.leader === undefined ? "none" : String(c.leader)),
      h("dt", null, "Term"), h("dd", null, String(c.term)),
      h("dt", null, "Applied"), h("dd", null, `${c.applied_index} of ${c.last_log_index}`)),
    table("Members", [
      { label: "Member" }, { label: "Address" }, { label: "Role" }, { label: "Matched", num: true },
      { label: "Lag", num: true }, { label: "Applied", num: true }, { label: "Last contact" },
    ], c.members.map((m) => [
      String(m.id),
      h("span", { class: "mono" }, m.url),
      m.id === c.leader ? badge("ok", m.role) : m.role,
      m.matched_index ?? "",
      m.lag ?? "",
      m.applied_index ?? "",
      m.last_contact_ms === null || m.last_contact_ms === undefined ? "" : `${ago(m.last_contact_ms)} ago`,
    ]), "No members."),
  ];
}

function nodesPage() {
  const n = state.nodes;
  if (!n) return [h("h1", { tabindex: -1 }, "Sidecars"), h("p", { class: "muted" }, "Loading…")];
  return [
    h("h1", { tabindex: -1 }, "Sidecars"),
    h("p", { class: "lead" }, `Head revision ${n.head}. A sidecar is lost when it has not reported for a while.`),
    table(`${n.count} sidecars`, [
      { label: "Node" }, { label: "State" }, { label: "Applied", num: true }, { label: "Behind", num: true },
      { label: "Lag" }, { label: "Last report" }, { label: "Version" }, { label: "DNS" }, { label: "Admin" },
    ], n.nodes.map((s) => [
      s.node,
      [badge(s.state === "live" ? "ok" : "bad", s.state), s.report.stale ? badge("warn", "stale") : null],
      s.report.revision,
      s.lag_revisions,
      `${s.lag_ms} ms`,
      `${ago(s.last_contact_ms)} ago`,
      s.report.version,
      h("span", { class: "mono" }, (s.report.dns || []).join(", ")),
      s.report.admin ? h("span", { class: "mono" }, s.report.admin) : "",
    ]), "No sidecar has reported."),
  ];
}

function renderBanners() {
  const banners = [];
  const health = state.health;
  // Always at the top: the control plane's health and what it stores in.
  const line = document.getElementById("health");
  line.className = `health ${health && health.status !== "healthy" ? "degraded" : ""}`;
  line.textContent = state.healthError
    ? "Unreachable"
    : health
      ? `${health.status} · ${health.instances} instances · ${health.store} store`
      : "";
  if (state.healthError) {
    banners.push(h("div", { class: "banner bad", role: "status" }, h("strong", null, "Control plane unreachable."), state.healthError));
  } else if (health) {
    if (health.self_preservation) {
      banners.push(h("div", { class: "banner warn", role: "status" },
        h("strong", null, "Self-preservation is on."),
        "More instances missed their heartbeats at once than the threshold allows, so expiry is " +
        "held: some instances listed here may be gone. It ends by itself when heartbeats return."));
    }
    // `degraded` is self-preservation (said above) or a failed store.
    if (health.status !== "healthy" && !health.self_preservation) {
      banners.push(h("div", { class: "banner bad", role: "status" }, h("strong", null, `Health: ${health.status}.`), `Store: ${health.store}.`));
    }
  }
  document.getElementById("banners").replaceChildren(...banners);
}

let renderQueued = false;
function renderSoon() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    render();
  });
}

let lastPage = null;

function render() {
  const r = route();
  const main = document.getElementById("main");
  const focused = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.key : null;
  const newPage = lastPage !== `${r.page}:${r.service || ""}`;
  if (newPage && r.page !== "services") filterForm = null;
  let content;
  if (r.page === "service") content = servicePage(r);
  else if (r.page === "cluster") content = clusterPage();
  else if (r.page === "nodes") content = nodesPage();
  else content = servicesPage(r);
  if (state.pageError && r.page !== "services") {
    content.splice(1, 0, h("p", { class: "banner bad", role: "status" }, state.pageError.message));
  }
  main.replaceChildren(...content);
  for (const link of document.querySelectorAll("nav a[data-page]")) {
    const current = link.dataset.page === r.page || (r.page === "service" && link.dataset.page === "services");
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (focused) {
    const again = main.querySelector(`[data-key="${CSS.escape(focused)}"]`);
    if (again) again.focus();
  }
  if (newPage) {
    lastPage = `${r.page}:${r.service || ""}`;
    document.title = r.page === "service" ? `${r.service} · Waypost` : `${r.page[0].toUpperCase()}${r.page.slice(1)} · Waypost`;
    // Move focus to the new page's heading, for keyboard and screen-reader users.
    const heading = main.querySelector("h1");
    if (heading && document.activeElement !== document.getElementById("filter-name")) heading.focus();
  }
  const live = document.getElementById("stream");
  if (state.stream === "live") live.textContent = `Live · revision ${state.revision}`;
}

// ---------------------------------------------------------------------------------------
// Actions

function showAlert(message) {
  const alert = document.getElementById("alert");
  alert.replaceChildren(
    h("span", null, message),
    h("button", { type: "button", class: "secondary", onclick: () => { alert.hidden = true; } }, "Dismiss"));
  alert.hidden = false;
}

function announce(message) {
  document.getElementById("announce").textContent = message;
}

async function act(what, call) {
  try {
    const answer = await call();
    // Show the answer at once, unless the stream has already removed the instance since.
    const known = answer && answer.instance && state.services.get(answer.instance.service);
    if (known && known.has(answer.instance.id)) put(answer.instance);
    document.getElementById("alert").hidden = true;
    announce(`${what}: done at revision ${answer && answer.revision}`);
    renderSoon();
    refreshSoon();
  } catch (err) {
    showAlert(`${what} failed: ${err.message}`);
    if (err.status === 401) askForToken(err.message);
  }
}

function drain(instance, draining) {
  return act(`${draining ? "Drain" : "Undrain"} ${instance.id}`, () =>
    api("/drain", { method: "POST", body: { service: instance.service, id: instance.id, draining } }));
}

function deregister(instance) {
  if (!confirm(`Deregister ${instance.id} from ${instance.service}? Its sidecars stop sending it work.`)) return;
  act(`Deregister ${instance.id}`, async () => {
    const answer = await api("/deregister", { method: "POST", body: { service: instance.service, id: instance.id } });
    // The stream's remove event follows; drop it now so the button cannot be pressed twice.
    const instances = state.services.get(instance.service);
    if (instances) instances.delete(instance.id);
    return answer;
  });
}

function askForToken(reason) {
  const dialog = document.getElementById("token-dialog");
  if (reason) document.getElementById("token-reason").textContent = `${reason}. The token is kept in this tab's session storage only.`;
  if (!dialog.open) dialog.showModal();
}

function setupToken() {
  const dialog = document.getElementById("token-dialog");
  const input = document.getElementById("token-input");
  document.getElementById("token-button").addEventListener("click", () => askForToken(null));
  dialog.addEventListener("close", () => {
    if (dialog.returnValue === "save" && input.value.trim()) {
      sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    } else if (dialog.returnValue === "forget") {
      sessionStorage.removeItem(TOKEN_KEY);
    } else {
      return;
    }
    input.value = "";
    document.getElementById("alert").hidden = true;
    setStream("connecting");
    restartStream();
    refreshSoon();
  });
}

// ---------------------------------------------------------------------------------------

window.addEventListener("hashchange", () => {
  pageGeneration += 1;
  filterForm = null; // Back or a link may carry other filters: build the form from them
  state.pageError = null;
  render();
  refreshPage();
});

setupToken();
render();
follow();
pollHealth();
refreshPage();
