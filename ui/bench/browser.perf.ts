// The UI's targets, measured in Debian's chromium against a real `vigil serve`
// (a benchmark: it prints figures and asserts nothing about time).
//
//   cd ui && VIGIL_BIN=../target/release/vigil npm run bench:browser
//
// 1. 10,000 msg/s from 1,000 MQTT connections (npm `mqtt`), 30 s on the
//    device list and 30 s in the inspector: long tasks (> 50 ms) from a
//    PerformanceObserver, and the rate the server actually received.
// 2. 10,000 devices: from navigation to rows on screen, then how long a
//    keystroke in the filter takes to show its result.
// 3. A 30-day chart at 1 Hz (2,592,000 samples, sent as SenML packs with
//    relative times, 256 readings each: the most Vigil takes from one
//    payload): from the click on "30 d" to the chart drawn.
import { describe, it } from "vitest";
import mqtt, { type MqttClient } from "mqtt";
import type { BrowserContext, Page } from "playwright-core";
import { browser, shot, until, Vigil } from "../tests/browser/harness";

const DEVICES = Number(process.env.BENCH_DEVICES ?? 1000);
const RATE = Number(process.env.BENCH_RATE ?? 10_000);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 30);

const results: Record<string, unknown> = {};
const report = (key: string, value: unknown) => {
  results[key] = value;
  console.log(`${key}: ${JSON.stringify(value)}`);
};

async function connect(v: Vigil, id: string): Promise<MqttClient> {
  const c = mqtt.connect({ host: "127.0.0.1", port: Number(v.mqttPort), clientId: id, keepalive: 60, reconnectPeriod: 0 });
  await new Promise<void>((ok, fail) => {
    c.once("connect", () => ok());
    c.once("error", fail);
  });
  return c;
}

/** Publishes at `rate` msg/s spread over `clients`, until stopped. */
function load(clients: MqttClient[], rate: number) {
  const TICK_MS = 50;
  const perTick = Math.round((rate * TICK_MS) / 1000);
  let seq = 0;
  let sent = 0;
  const timer = setInterval(() => {
    for (let i = 0; i < perTick; i++) {
      const d = seq++ % clients.length;
      const c = clients[d];
      if (c.connected) {
        c.publish(`dev${d}/state`, `{"temp":${(20 + Math.sin(seq / 1000 + d)).toFixed(2)},"hum":${40 + (seq % 7)}}`, { qos: 0 });
        sent++;
      }
    }
  }, TICK_MS);
  return { stop: () => clearInterval(timer), sent: () => sent };
}

/** Long tasks (> 50 ms) on the page over `seconds`. */
async function longTasks(page: Page, seconds: number) {
  await page.evaluate(() => {
    (window as any).__long = [];
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) (window as any).__long.push(e.duration);
    }).observe({ type: "longtask" });
  });
  await page.waitForTimeout(seconds * 1000);
  const durations: number[] = await page.evaluate(() => (window as any).__long);
  return {
    long_tasks: durations.length,
    over_100ms: durations.filter((d) => d > 100).length,
    max_ms: Math.round(Math.max(0, ...durations)),
  };
}

describe("browser benchmarks", () => {
  it(`live load: ${RATE} msg/s from ${DEVICES} devices`, async () => {
    const v = await Vigil.start();
    const context: BrowserContext = await browser();
    const clients: MqttClient[] = [];
    try {
      for (let i = 0; i < DEVICES; i++) clients.push(await connect(v, `bench-${i}`));
      const page = await context.newPage();
      const l = load(clients, RATE);
      await page.goto(v.url + "#/devices");
      await until(async () => (await v.api<unknown[]>("/api/devices")).length >= DEVICES, 30_000, "every device");
      await page.waitForTimeout(3000);
      for (const screen of ["devices", "inspector"]) {
        await page.goto(v.url + `#/${screen}`);
        await page.waitForTimeout(2000);
        const before = await v.api<{ received: number }>("/api/stats");
        const t0 = Date.now();
        const lt = await longTasks(page, SECONDS);
        const after = await v.api<{ received: number }>("/api/stats");
        report(`live_${screen}`, { ...lt, received_per_s: Math.round((after.received - before.received) / ((Date.now() - t0) / 1000)) });
        await shot(page, `bench-live-${screen}`);
      }
      l.stop();
      report("live_sent", l.sent());
    } finally {
      for (const c of clients) c.end(true);
      await context.close();
      await v.dispose(false);
    }
  }, 300_000);

  it("10,000 devices: time to rows, and to a filtered list", async () => {
    const v = await Vigil.start();
    const context = await browser();
    try {
      const c = await connect(v, "seeder");
      for (let i = 0; i < 10_000; i++) c.publish(`room${String(i).padStart(5, "0")}/temp`, String(18 + (i % 70) / 10), { qos: 0 });
      await new Promise<void>((ok) => c.end(false, {}, () => ok()));
      await until(async () => (await v.api<{ devices: number }>("/api/stats")).devices >= 10_000, 60_000, "10,000 devices");
      const page = await context.newPage();
      const t0 = Date.now();
      await page.goto(v.url + "#/devices");
      await page.locator("[data-device]").first().waitFor({ timeout: 30_000 });
      const toRows = Date.now() - t0;
      const filterMs = await page.evaluate(async () => {
        const input = document.querySelector<HTMLInputElement>('input[aria-label="filter devices"]')!;
        const start = performance.now();
        input.value = "room09999";
        input.dispatchEvent(new Event("input", { bubbles: true }));
        for (;;) {
          await new Promise(requestAnimationFrame);
          const rows = document.querySelectorAll("[data-device]");
          if (rows.length === 1) return performance.now() - start;
          if (performance.now() - start > 10_000) return -1;
        }
      });
      const nav = await page.evaluate(() => {
        const n = performance.getEntriesByType("navigation")[0] as PerformanceNavigationTiming;
        return { dom_content_loaded_ms: Math.round(n.domContentLoadedEventEnd), load_ms: Math.round(n.loadEventEnd) };
      });
      report("devices_10k", { navigation_to_rows_ms: toRows, filter_keystroke_ms: Math.round(filterMs), ...nav });
      await shot(page, "bench-devices-10k");
    } finally {
      await context.close();
      await v.dispose(false);
    }
  }, 300_000);

  it("a 30-day chart at 1 Hz (2.6 million samples)", async () => {
    const v = await Vigil.start({ config: "[store]\nretention_days = 60\n" });
    const context = await browser();
    try {
      const c = await connect(v, "oximeter");
      const DAY = 86_400;
      const total = 30 * DAY;
      const start = Math.floor(Date.now() / 1000) - total;
      // A payload gives at most 256 readings (MAX_METRICS_PER_PAYLOAD): packs of 256.
      const PACK = 256;
      const t0 = Date.now();
      for (let first = 0; first < total; first += PACK) {
        const records: object[] = [{ bn: "oxi/", bt: start + first, n: "spo2", v: 97, u: "%" }];
        for (let i = 1; i < PACK && first + i < total; i++) records.push({ n: "spo2", t: i, v: 94 + ((first + i) % 6) });
        c.publish("oxi/senml", JSON.stringify(records), { qos: 0 });
        if ((first / PACK) % 500 === 0) await c.publishAsync("oxi/senml", "[]", { qos: 1 }); // pace: wait for the broker
      }
      await until(async () => (await v.api<{ samples: number }>("/api/stats")).samples >= total, 600_000, "every sample stored");
      report("chart_seed", { samples: total, seconds: Math.round((Date.now() - t0) / 1000) });
      c.end(true);
      const device = await v.api<{ id: string; metrics: { name: string }[] }>("/api/devices/oxi");
      const metric = device.metrics[0].name;
      const now = Date.now() * 1000;
      const api0 = Date.now();
      await v.api(`/api/devices/oxi/metrics/${encodeURIComponent(metric)}?from=${now - total * 1e6}&to=${now}&max_points=1400`);
      const apiMs = Date.now() - api0;
      const page = await context.newPage();
      await page.goto(v.url + "#/device/oxi");
      const chart = page.locator(`[data-testid="chart"][data-metric="${metric}"]`);
      await chart.locator("canvas").waitFor();
      const renderMs = await page.evaluate(async (metric) => {
        const chart = document.querySelector(`[data-testid="chart"][data-metric="${metric}"]`)!;
        const button = [...document.querySelectorAll("button")].find((b) => b.textContent === "30 d")!;
        const start = performance.now();
        button.click();
        for (;;) {
          await new Promise(requestAnimationFrame);
          if (Number(chart.getAttribute("data-samples")) >= 2_500_000) {
            await new Promise(requestAnimationFrame); // the frame that paints it
            return performance.now() - start;
          }
          if (performance.now() - start > 30_000) return -1;
        }
      }, metric);
      report("chart_30d", { samples: total, api_ms: apiMs, click_to_drawn_ms: Math.round(renderMs) });
      await shot(page, "bench-chart-30d");
    } finally {
      await context.close();
      await v.dispose(false);
    }
  }, 900_000);
});
