// The UI in a real browser against a real `vigil serve`, fed by real MQTT
// clients (Debian's mosquitto_pub). Screenshots of every screen, light and
// dark, go to artifacts/browser/.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { spawn } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { BrowserContext, Page } from "playwright-core";
import { browser, CoapDevice, LineDevice, publish, shot, until, Vigil } from "./harness";
import { parseCsv, CSV_COLUMNS } from "../../src/lib/payload";

let vigil: Vigil;
let context: BrowserContext;
let page: Page;
let failed = false;

beforeAll(async () => {
  vigil = await Vigil.start();
  context = await browser();
  page = await context.newPage();
  page.on("pageerror", (e) => console.error("page error:", e));
});

afterAll(async () => {
  await context?.close();
  await vigil?.dispose(failed);
});

const go = async (hash: string) => {
  await page.goto(vigil.url + hash);
};

/** Publishes `payload` from a file with mosquitto_pub, then selects it in the inspector. */
async function publishFileAndOpen(topic: string, payload: string | Buffer) {
  const file = join(tmpdir(), `vigil-payload-${process.pid}`);
  writeFileSync(file, payload);
  await go("#/inspector");
  await publish(vigil, topic, ["-f", file]);
  const row = page.locator(`[data-testid="messages"] [data-topic="${topic}"]`);
  await row.first().waitFor({ timeout: 10_000 });
  await row.first().click();
}

async function bothThemes(name: string) {
  for (const theme of ["light", "dark"] as const) {
    await page.evaluate((t) => (document.documentElement.dataset.theme = t), theme);
    await page.waitForTimeout(150);
    await shot(page, `${name}-${theme}`);
  }
  await page.evaluate(() => document.documentElement.removeAttribute("data-theme"));
}

describe("the UI in chromium", () => {
  it("shows a new device, and turns it offline when its client is killed, without a reload", async () => {
    await go("#/devices");
    await page.getByText("No devices yet").waitFor();
    // The first-run guide names the port this Vigil really listens on, and offers its CA.
    const guide = page.getByTestId("connect-guide");
    await expect.poll(() => guide.innerText()).toContain(`-p ${vigil.mqttPort} -t kitchen/env`);
    await guide.getByRole("button", { name: "Download ca.pem" }).waitFor();
    await shot(page, "first-run");
    const device = new LineDevice(vigil, "ward3/oximeter1/spo2", "oximeter1");
    try {
      device.send("97");
      const row = page.locator('[data-device="ward3"]');
      await row.waitFor({ timeout: 10_000 });
      await expect.poll(() => row.locator("[data-presence]").getAttribute("data-presence"), { timeout: 10_000 }).toBe("online");
      await publish(vigil, "home/kitchen/temperature", ["-m", "21.5"]);
      await page.locator('[data-device="home"]').waitFor();
      await bothThemes("devices");
      const reloads: string[] = [];
      page.on("framenavigated", (f) => f === page.mainFrame() && reloads.push(f.url()));
      device.kill();
      await expect.poll(() => row.locator("[data-presence]").getAttribute("data-presence"), { timeout: 10_000 }).toBe("offline");
      expect(reloads).toEqual([]);
      expect(await page.getByTestId("count-offline").innerText()).toContain("1");
      await shot(page, "devices-offline");
    } finally {
      device.kill();
    }
  });

  it("charts the values a device published", async () => {
    const values = [60, 62, 65, 71, 68, 64];
    for (const v of values) await publish(vigil, "clinic/pulse1/heart_rate", ["-m", String(v)]);
    await go("#/device/clinic");
    await page.getByTestId("device-title").waitFor();
    const chart = page.locator('[data-testid="chart"][data-metric="pulse1/heart_rate"]');
    await expect.poll(() => chart.getAttribute("data-samples"), { timeout: 10_000 }).toBe(String(values.length));
    // The store agrees with what the chart was given.
    const device = await vigil.api<{ metrics: { name: string }[] }>("/api/devices/clinic");
    const metric = device.metrics[0].name;
    const series = await vigil.api<{ points: { min: number; max: number; count: number }[] }>(
      `/api/devices/clinic/metrics/${encodeURIComponent(metric)}?from=0`,
    );
    expect(Math.min(...series.points.map((p) => p.min))).toBe(60);
    expect(Math.max(...series.points.map((p) => p.max))).toBe(71);
    expect(await chart.locator("canvas").count()).toBeGreaterThan(0);
    await bothThemes("device");
  });

  it("filters the inspector by MQTT wildcard and by regular expression", async () => {
    await go("#/inspector");
    for (const t of ["site/a/temp", "site/b/temp", "site/b/humidity", "other/a/temp"]) await publish(vigil, t, ["-m", `{"v": 1, "t": "${t}"}`]);
    const rows = page.locator('[data-testid="messages"] [data-topic]');
    await until(async () => (await rows.count()) >= 4, 10_000, "messages in the inspector");
    await page.getByLabel("wildcard filter").fill("site/+/temp");
    await expect.poll(async () => (await rows.evaluateAll((els) => els.map((e) => e.getAttribute("data-topic")))).sort()).toEqual(["site/a/temp", "site/b/temp"]);
    await page.getByLabel("wildcard filter").fill("");
    await page.getByLabel("regex filter").fill("^(other|site/b)/");
    await expect.poll(async () => (await rows.evaluateAll((els) => els.map((e) => e.getAttribute("data-topic")))).sort()).toEqual([
      "other/a/temp",
      "site/b/humidity",
      "site/b/temp",
    ]);
    await rows.filter({ hasText: "site/b/humidity" }).first().click();
    await page.getByTestId("payload").waitFor();
    await bothThemes("inspector");
    await page.getByLabel("regex filter").fill("");
  });

  it("shows a 300 KiB payload whole, with its size", async () => {
    const big = "x".repeat(300 * 1024 - 6) + "THEEND";
    await publishFileAndOpen("bulk/blob", big);
    await expect.poll(() => page.getByTestId("size").innerText()).toContain("307,200 bytes");
    const shown = await page.getByTestId("payload").evaluate((e) => e.textContent ?? "");
    expect(shown.length).toBe(big.length);
    expect(shown.endsWith("THEEND")).toBe(true);
    await shot(page, "inspector-large-payload");
  });

  it("shows a binary SenML (CBOR) payload decoded, with its readings", async () => {
    // [{-2: "pump1/", 0: "temp", 1: "Cel", 2: 21.5}]: bn, n, u, v (RFC 8428, section 6)
    const cbor = Buffer.from([0x81, 0xa4, 0x21, 0x66, ...Buffer.from("pump1/"), 0x00, 0x64, ...Buffer.from("temp"), 0x01, 0x63, ...Buffer.from("Cel"), 0x02, 0xf9, 0x4d, 0x60]);
    await publishFileAndOpen("plant/pump1/senml", cbor);
    const structure = JSON.parse(await page.getByTestId("structure").innerText());
    expect(structure).toEqual([{ bn: "pump1/", n: "temp", u: "Cel", v: 21.5 }]);
    const readings = await page.getByTestId("detail").locator("table").last().innerText();
    expect(readings).toContain("pump1/temp");
    expect(readings).toContain("21.5");
    expect(readings).toContain("Cel");
    await shot(page, "inspector-senml-cbor");
  });

  it("exports what the inspector shows as CSV, matching the store", async () => {
    await go("#/inspector");
    const rows = page.locator('[data-testid="messages"] [data-topic]');
    await until(async () => (await rows.count()) >= 5, 10_000, "messages");
    await page.getByLabel("wildcard filter").fill("site/#");
    await expect.poll(() => rows.count()).toBe(3);
    const [download] = await Promise.all([page.waitForEvent("download"), page.getByTestId("export-csv").click()]);
    const csv = readFileSync((await download.path())!, "utf8");
    const [header, ...records] = parseCsv(csv);
    expect(header).toEqual([...CSV_COLUMNS]);
    expect(records.length).toBe(3);
    const stored = await vigil.api<Record<string, unknown>[]>("/api/messages?limit=1000");
    for (const r of records) {
      const row = Object.fromEntries(header.map((h, i) => [h, r[i]]));
      const m = stored.find((s) => String(s.id) === row.id)!;
      expect(m, `message ${row.id} is in the store`).toBeTruthy();
      for (const c of ["at", "topic", "qos", "size", "payload_text", "payload_base64"]) expect(row[c]).toBe(String(m[c] ?? ""));
    }
  });

  it("screens for alerts, broker and settings", async () => {
    await fetch(`http://${vigil.ready.http}/api/alert-rules`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ name: "Heart rate high", severity: "major", scope: { device: "clinic" }, condition: { metric: { metric: "pulse1/heart_rate", test: { above: 100 } } } }),
    });
    await publish(vigil, "clinic/pulse1/heart_rate", ["-m", "130"]);
    await go("#/alerts");
    const firing = page.getByTestId("alerts").locator("tr.firing");
    await firing.first().waitFor({ timeout: 10_000 });
    await expect.poll(() => firing.first().innerText()).toContain("Heart rate high"); // the rule's name, once rules load
    expect(await page.getByTestId("alert-count").innerText()).toBe("1");
    // The device list shows it too, from the same live alert.
    await go("#/devices");
    await expect.poll(() => page.locator('[data-device="clinic"] [data-testid="device-alerts"]').innerText()).toBe("1");
    await go("#/alerts");
    await bothThemes("alerts");
    await page.getByTestId("alerts").locator("tr.firing").getByRole("button", { name: "Acknowledge" }).click();
    await page.getByTestId("alerts").locator("tr.acknowledged").first().waitFor({ timeout: 10_000 });
    const stored = await vigil.api<{ state: string }[]>("/api/alerts?state=active");
    expect(stored.map((a) => a.state)).toEqual(["acknowledged"]);
    // A nurse station's client with a persistent session (mosquitto_sub -c)
    // subscribes and leaves; what is published for it waits.
    await new Promise<void>((resolve) =>
      spawn("mosquitto_sub", ["-h", "127.0.0.1", "-p", vigil.mqttPort, "-i", "nurse-station", "-c", "-q", "1", "-t", "clinic/#", "-W", "1"], {
        stdio: "ignore",
      }).on("close", () => resolve()),
    );
    await publish(vigil, "clinic/pulse1/heart_rate", ["-m", "88"]);
    await go("#/broker");
    await page.getByTestId("listeners").waitFor();
    const absent = page.getByTestId("absent").locator("tr", { hasText: "nurse-station" });
    await expect.poll(() => absent.locator("td").nth(2).innerText().catch(() => ""), { timeout: 12_000 }).toBe("1");
    expect(await absent.locator("td").nth(3).innerText()).toBe("never");
    await bothThemes("broker");
    // A device certificate from the Broker screen: issued, offered as files, revoked.
    const certs = page.getByTestId("certificates");
    await certs.getByRole("textbox").fill("ward3/oximeter9");
    await certs.getByRole("button", { name: "Issue a certificate" }).click();
    await certs.getByRole("button", { name: "ward3%2Foximeter9.key" }).waitFor();
    const row = certs.locator("tr", { hasText: "ward3/oximeter9" });
    page.once("dialog", (d) => d.accept());
    await row.getByRole("button", { name: "Revoke" }).click();
    await certs.locator("tr.revoked", { hasText: "ward3/oximeter9" }).waitFor();
    const listed = await vigil.api<{ certificates: { name: string; revoked: boolean }[] }>("/api/certs");
    expect(listed.certificates.find((c) => c.name === "ward3/oximeter9")?.revoked).toBe(true);
    await go("#/settings");
    await page.getByTestId("theme").waitFor();
    await bothThemes("settings");
  });

  it("adds a CoAP device by address, lists its resources and pokes one", async () => {
    const device = await CoapDevice.start("--period", "0.5");
    try {
      await go("#/devices");
      const finder = page.getByTestId("coap-finder");
      await finder.getByLabel("CoAP address").fill(device.address);
      await finder.getByRole("button", { name: "Add" }).click();
      await expect.poll(() => finder.getByTestId("coap-status").innerText(), { timeout: 10_000 }).toContain(
        `coap/${device.address} answered: 8 resource(s), 3 observed.`,
      );
      const row = page.locator(`[data-device="coap/${device.address}"]`);
      await row.waitFor({ timeout: 10_000 });
      await row.click();
      const panel = page.getByTestId("coap-panel");
      await panel.locator('tr[data-path="/sensors/env"]').filter({ hasText: "observing" }).waitFor({ timeout: 10_000 });
      await expect.poll(() => panel.locator('tr[data-path="/sensors/env"]').innerText()).toContain("application/senml+json");
      // PUT a setting, then read it back through the same form.
      await panel.locator('tr[data-path="/config/interval"] button.path').click();
      await panel.getByLabel("method").selectOption("PUT");
      await panel.getByLabel("payload").fill("0.75");
      await panel.getByLabel("content format").selectOption("0");
      await panel.getByRole("button", { name: "Send", exact: true }).click();
      await expect.poll(() => panel.getByTestId("coap-answer").innerText()).toContain("2.04");
      await panel.getByLabel("method").selectOption("GET");
      await panel.getByRole("button", { name: "Send", exact: true }).click();
      await expect.poll(() => panel.getByTestId("coap-answer").innerText()).toContain("0.75");
      // Its readings chart like any device's.
      await page.locator('[data-testid="chart"][data-metric="env/temp"]').waitFor({ timeout: 10_000 });
      await panel.scrollIntoViewIfNeeded();
      await bothThemes("device-coap");
    } finally {
      device.kill();
    }
  });

  it("says it is disconnected while vigil serve restarts, then recovers by itself", async () => {
    await go("#/devices");
    await page.getByTestId("link-state").filter({ hasText: "live" }).waitFor();
    await vigil.stop();
    await page.getByTestId("disconnected").waitFor({ timeout: 10_000 });
    await shot(page, "devices-disconnected");
    await vigil.restart();
    await page.getByTestId("disconnected").waitFor({ state: "detached", timeout: 15_000 });
    // Live again: a device that appears after the restart shows up.
    await publish(vigil, "garage/door/open", ["-m", "1"]);
    await page.locator('[data-device="garage"]').waitFor({ timeout: 10_000 });
  });
}, 120_000);

// Keep the server's log when a test failed.
afterAll(() => {
  failed = (globalThis as any).__vitest_worker__?.current?.result?.state === "fail";
});
