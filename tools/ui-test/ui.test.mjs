// Drives the dashboard in a real Chromium (the system's, through playwright-core) against real
// control planes that tools/ui-check.sh started, and saves screenshots.
//
// Usage: node ui.test.mjs OPEN_ADDR TOKENS_ADDR HELD_ADDR READ_TOKEN OPERATOR_TOKEN SCREENSHOT_DIR
// OPEN_ADDR runs without authorization, TOKENS_ADDR with a read and an operator token, HELD_ADDR
// with self-preservation from the first expiry (--self-preservation-min 1).
// Every wait is on a condition with a deadline (Playwright's expectations poll the page).

import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { chromium } from "playwright-core";

const [open, secured, heldAddr, readToken, operatorToken, shots] = process.argv.slice(2);
if (!shots) {
  console.error("usage: node ui.test.mjs OPEN_ADDR TOKENS_ADDR HELD_ADDR READ_TOKEN OPERATOR_TOKEN SCREENSHOT_DIR");
  process.exit(2);
}
mkdirSync(shots, { recursive: true });
const DEADLINE = 15000;

/** Calls the control plane's API directly, as a service would. */
async function call(addr, method, path, body, token) {
  const headers = { "content-type": "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(`http://${addr}${path}`, { method, headers, body: body && JSON.stringify(body) });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return JSON.parse(text);
}

/** Polls `probe` until it returns true, failing after the deadline with `what`. */
async function until(what, probe) {
  const end = Date.now() + DEADLINE;
  for (;;) {
    if (await probe()) return;
    if (Date.now() > end) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  // As root (CI), Chromium needs --no-sandbox.
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
let failed = false;
const step = async (name, body) => {
  process.stdout.write(`ui: ${name} ... `);
  try {
    await body();
    console.log("ok");
  } catch (err) {
    failed = true;
    console.log("FAILED");
    console.error(err);
  }
};

try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  const pageErrors = [];
  page.on("pageerror", (err) => pageErrors.push(err));
  page.on("console", (msg) => { if (msg.type() === "error") pageErrors.push(msg.text()); });

  await call(open, "POST", "/register", {
    service: "web", address: "127.0.0.1:8001", id: "web-1", tags: ["v1", "blue"], metadata: { zone: "a" }, ttl_seconds: 600,
  });
  await call(open, "POST", "/register", {
    service: "web", address: "127.0.0.1:8002", id: "web-2", tags: ["v2"], ttl_seconds: 600,
  });
  await call(open, "POST", "/register", {
    service: "db", address: "127.0.0.1:5432", id: "db-1", tags: ["primary"], ttl_seconds: 600,
  });

  await step("the services page lists what is registered and goes live", async () => {
    await page.goto(`http://${open}/ui/`);
    await page.locator("#stream", { hasText: "Live" }).waitFor({ timeout: DEADLINE });
    await page.locator("#health", { hasText: "healthy · 3 instances · memory store" }).waitFor({ timeout: DEADLINE });
    await page.getByRole("link", { name: "web", exact: true }).waitFor({ timeout: DEADLINE });
    await page.getByRole("link", { name: "db", exact: true }).waitFor({ timeout: DEADLINE });
  });

  await step("a service registered after the page loaded appears without a reload", async () => {
    let navigations = 0;
    page.on("framenavigated", () => { navigations += 1; });
    await call(open, "POST", "/register", {
      service: "payments", address: "127.0.0.1:9001", tags: ["blue"], ttl_seconds: 600,
    });
    await page.getByRole("link", { name: "payments", exact: true }).waitFor({ timeout: DEADLINE });
    assert.equal(navigations, 0, "the page was reloaded");
    await page.screenshot({ path: `${shots}/services.png`, fullPage: true });
  });

  await step("the tag filter narrows the list", async () => {
    await page.getByLabel("Tag").fill("blue");
    await until("only web and payments are listed", async () => {
      const names = await page.locator("table tbody th a").allTextContents();
      return names.join(",") === "payments,web";
    });
    assert.match(page.url(), /tag=blue/);
    await page.getByLabel("Tag").fill("");
    await until("all three are back", async () => (await page.locator("table tbody th a").count()) === 3);
  });

  await step("the health filter and the name filter narrow the list", async () => {
    await page.getByLabel("Name contains").fill("we");
    await until("only web is listed", async () =>
      (await page.locator("table tbody th a").allTextContents()).join(",") === "web");
    await page.getByLabel("Name contains").fill("");
    await page.getByLabel("Health").selectOption("draining");
    await until("no service has a draining instance", async () =>
      (await page.getByText("No service matches the filter.").count()) === 1);
    await page.getByLabel("Health").selectOption("any");
  });

  await step("drain on the service page turns the instance draining and /discover drops it", async () => {
    await page.getByRole("link", { name: "web", exact: true }).click();
    await page.getByRole("heading", { level: 1, name: "web" }).waitFor({ timeout: DEADLINE });
    const row = page.locator("tbody tr", { has: page.getByText("web-1", { exact: true }) });
    await row.getByText("zone=a").waitFor({ timeout: DEADLINE });
    await row.getByText(/ago \(expires in/).waitFor({ timeout: DEADLINE });
    await page.getByRole("button", { name: "Drain web-1" }).click();
    await row.locator(".badge", { hasText: "draining" }).waitFor({ timeout: DEADLINE });
    await page.getByRole("button", { name: "Undrain web-1" }).waitFor({ timeout: DEADLINE });
    const found = await call(open, "GET", "/discover/web");
    assert.deepEqual(found.instances.map((i) => i.id), ["web-2"]);
    await page.screenshot({ path: `${shots}/service.png`, fullPage: true });
  });

  await step("a drain made elsewhere shows without a reload, and undrain returns it", async () => {
    await call(open, "POST", "/drain", { service: "web", id: "web-2" });
    const row = page.locator("tbody tr", { has: page.getByText("web-2", { exact: true }) });
    await row.locator(".badge", { hasText: "draining" }).waitFor({ timeout: DEADLINE });
    await page.getByRole("button", { name: "Undrain web-2" }).click();
    await row.locator(".badge", { hasText: "up" }).waitFor({ timeout: DEADLINE });
    const found = await call(open, "GET", "/discover/web");
    assert.deepEqual(found.instances.map((i) => i.id), ["web-2"]);
  });

  await step("deregister asks first, then removes the instance", async () => {
    page.once("dialog", (dialog) => dialog.accept());
    await page.getByRole("button", { name: "Deregister web-2" }).click();
    await until("web-2 is gone from the page", async () =>
      (await page.getByRole("button", { name: "Deregister web-2" }).count()) === 0);
    const found = await call(open, "GET", "/discover/web?healthy=false");
    assert.deepEqual(found.instances.map((i) => i.id), ["web-1"]);
    await page.getByRole("heading", { name: "Recently removed" }).waitFor({ timeout: DEADLINE });
  });

  await step("the cluster and sidecar pages render", async () => {
    await page.getByRole("link", { name: "Cluster" }).click();
    await page.getByRole("heading", { level: 1, name: "Cluster" }).waitFor({ timeout: DEADLINE });
    await page.locator("tbody .badge", { hasText: "leader" }).waitFor({ timeout: DEADLINE });
    await page.getByRole("link", { name: "Sidecars" }).click();
    await page.getByRole("heading", { level: 1, name: "Sidecars" }).waitFor({ timeout: DEADLINE });
    await page.getByText("No sidecar has reported.").waitFor({ timeout: DEADLINE });
  });

  await step("on a narrow screen the instance table becomes labelled cards", async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    await page.goto(`http://${open}/ui/#/services/web`);
    const cell = page.locator("tbody td[data-label='Address']").first();
    await cell.waitFor({ timeout: DEADLINE });
    // Read afresh each time: a re-render replaces the cells.
    await until("cells are laid out as a grid of label and value", async () =>
      (await page.evaluate(() => {
        const td = document.querySelector("tbody td[data-label='Address']");
        return td && getComputedStyle(td).display;
      })) === "grid");
    await page.screenshot({ path: `${shots}/narrow.png`, fullPage: true });
    await page.setViewportSize({ width: 1280, height: 800 });
  });

  await step("the page raised no script errors", async () => {
    assert.deepEqual(pageErrors.map(String), []);
  });

  await step("self-preservation shows a banner, and the held instances say so", async () => {
    // TTLs of 1 s and no heartbeats: all four are overdue at once, and expiry is held.
    for (const port of [7101, 7102, 7103, 7104]) {
      await call(heldAddr, "POST", "/register", { service: "batch", address: `127.0.0.1:${port}`, ttl_seconds: 1 });
    }
    const held = await context.newPage();
    await held.goto(`http://${heldAddr}/ui/#/services/batch`);
    await held.getByText("Self-preservation is on.").waitFor({ timeout: DEADLINE });
    await held.locator("#health.degraded", { hasText: "degraded" }).waitFor({ timeout: DEADLINE });
    await held.getByText("held by self-preservation").first().waitFor({ timeout: DEADLINE });
    await held.screenshot({ path: `${shots}/self-preservation.png`, fullPage: true });
    await held.close();
  });

  // With authorization on.
  const secure = await context.newPage();
  await call(secured, "POST", "/register", { service: "api", address: "127.0.0.1:7001", id: "api-1", ttl_seconds: 600 }, operatorToken);

  await step("with tokens on, the page asks for a token, and a read token lists services", async () => {
    await secure.goto(`http://${secured}/ui/`);
    const dialog = secure.getByRole("dialog", { name: "Access token" });
    await dialog.waitFor({ timeout: DEADLINE });
    await dialog.getByText("401 unauthorized").waitFor({ timeout: DEADLINE });
    await secure.getByLabel("Token", { exact: true }).fill(readToken);
    await secure.getByRole("button", { name: "Use token" }).click();
    await secure.getByRole("link", { name: "api", exact: true }).waitFor({ timeout: DEADLINE });
    const stored = await secure.evaluate(() => sessionStorage.getItem("waypost.token"));
    assert.equal(stored, readToken);
    assert.ok(!secure.url().includes(readToken), "the token is in the address");
  });

  await step("a read token's drain shows the 403 and changes nothing", async () => {
    await secure.getByRole("link", { name: "api", exact: true }).click();
    await secure.getByRole("button", { name: "Drain api-1" }).click();
    const alert = secure.getByRole("alert");
    await alert.getByText("403 forbidden").waitFor({ timeout: DEADLINE });
    await secure.screenshot({ path: `${shots}/forbidden.png`, fullPage: true });
    const found = await call(secured, "GET", "/discover/api", undefined, operatorToken);
    assert.deepEqual(found.instances.map((i) => i.id), ["api-1"]);
  });

  await step("an operator token's drain works", async () => {
    await secure.getByRole("button", { name: "Token" }).click();
    await secure.getByLabel("Token", { exact: true }).fill(operatorToken);
    await secure.getByRole("button", { name: "Use token" }).click();
    // The dialog's close handler stores the token: wait for it, not for "Live" (already shown).
    await until("the operator token is in use", async () =>
      (await secure.evaluate(() => sessionStorage.getItem("waypost.token"))) === operatorToken);
    await secure.getByRole("button", { name: "Drain api-1" }).click();
    await secure.getByRole("button", { name: "Undrain api-1" }).waitFor({ timeout: DEADLINE });
    const found = await call(secured, "GET", "/discover/api", undefined, operatorToken);
    assert.deepEqual(found.instances, []);
  });
} finally {
  await browser.close();
}
if (failed) {
  console.error("ui: some steps failed");
  process.exit(1);
}
console.log(`ui: every step passed; screenshots in ${shots}`);
