// The browser suite's real parts: a `vigil serve` on free loopback ports with
// a fresh data folder, Debian's chromium driven by playwright-core, and
// Debian's mosquitto clients as devices.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createSocket } from "node:dgram";
import { createInterface } from "node:readline";
import { chromium, type BrowserContext, type Page } from "playwright-core";

const ROOT = resolve(__dirname, "../../..");
export const VIGIL_BIN = process.env.VIGIL_BIN ?? join(ROOT, "target/debug/vigil");
export const ARTIFACTS = resolve(process.env.ARTIFACTS ?? join(ROOT, "artifacts/browser"));
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";

export interface Ready {
  mqtt: string;
  http: string;
  data_dir: string;
}

export class Vigil {
  proc!: ChildProcess;
  ready!: Ready;
  stderr = "";
  private constructor(
    readonly dataDir: string,
    private readonly args: string[],
  ) {}

  /** Starts `vigil serve` on free loopback ports with a fresh data folder;
   * `config` is the text of a config file to give it. */
  static async start(options: { config?: string } = {}): Promise<Vigil> {
    const dataDir = mkdtempSync(join(tmpdir(), "vigil-browser-"));
    const args: string[] = [];
    if (options.config) {
      writeFileSync(join(dataDir, "vigil.toml"), options.config);
      args.push("--config", join(dataDir, "vigil.toml"));
    }
    const v = new Vigil(dataDir, args);
    await v.spawn("127.0.0.1:0", "127.0.0.1:0");
    return v;
  }

  private spawn(http: string, mqtt: string): Promise<void> {
    const args = ["serve", "--data-dir", this.dataDir, "--http-listen", http, "--mqtt-listen", mqtt, "--ws-listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0", "--wss-listen", "127.0.0.1:0", ...this.args];
    this.proc = spawn(VIGIL_BIN, args, {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, RUST_LOG: "info" },
    });
    this.proc.stderr!.on("data", (d) => (this.stderr += d));
    return new Promise((ok, fail) => {
      const timer = setTimeout(() => fail(new Error(`vigil serve did not become ready in 20 s:\n${this.stderr}`)), 20_000);
      createInterface({ input: this.proc.stdout! }).once("line", (line) => {
        clearTimeout(timer);
        this.ready = JSON.parse(line);
        ok();
      });
      this.proc.once("exit", (code) => fail(new Error(`vigil serve exited with ${code}:\n${this.stderr}`)));
    });
  }

  get url(): string {
    return `http://${this.ready.http}/`;
  }
  get mqttPort(): string {
    return this.ready.mqtt.split(":").pop()!;
  }

  async api<T>(path: string): Promise<T> {
    const r = await fetch(`http://${this.ready.http}${path}`);
    if (!r.ok) throw new Error(`${path}: ${r.status} ${await r.text()}`);
    return (await r.json()) as T;
  }

  /** SIGTERM and wait (it flushes everything accepted first). */
  async stop(): Promise<void> {
    if (this.proc.exitCode !== null) return;
    const exited = new Promise((ok) => this.proc.once("exit", ok));
    this.proc.kill("SIGTERM");
    await exited;
  }

  /** Stops and starts again on the same HTTP and MQTT addresses and data folder. */
  async restart(): Promise<void> {
    const { http, mqtt } = this.ready;
    await this.stop();
    await this.spawn(http, mqtt);
  }

  async dispose(keep: boolean): Promise<void> {
    await this.stop();
    if (keep) {
      mkdirSync(ARTIFACTS, { recursive: true });
      writeFileSync(join(ARTIFACTS, `vigil-${Date.now()}.stderr.log`), this.stderr);
    }
    rmSync(this.dataDir, { recursive: true, force: true });
  }
}

/** mosquitto_pub, once: resolves when it has published and left. */
export function publish(v: Vigil, topic: string, args: string[]): Promise<void> {
  return new Promise((ok, fail) => {
    const p = spawn("mosquitto_pub", ["-h", "127.0.0.1", "-p", v.mqttPort, "-q", "1", "-t", topic, ...args], { stdio: ["ignore", "ignore", "pipe"] });
    let err = "";
    p.stderr!.on("data", (d) => (err += d));
    p.once("exit", (code) => (code === 0 ? ok() : fail(new Error(`mosquitto_pub ${topic}: ${code} ${err}`))));
  });
}

/** A device that stays connected: mosquitto_pub -l, one line per message. */
export class LineDevice {
  readonly proc: ChildProcess;
  constructor(v: Vigil, readonly topic: string, clientId: string) {
    this.proc = spawn("mosquitto_pub", ["-h", "127.0.0.1", "-p", v.mqttPort, "-i", clientId, "-k", "30", "-q", "1", "-t", topic, "-l"], {
      stdio: ["pipe", "ignore", "inherit"],
    });
  }
  send(line: string): void {
    this.proc.stdin!.write(line + "\n");
  }
  kill(): void {
    this.proc.kill("SIGKILL");
  }
}

/** A CoAP device on aiocoap (tests/e2e/coap_device.py, in the repo's .venv)
 * on a free loopback UDP port. */
export class CoapDevice {
  private constructor(
    readonly proc: ChildProcess,
    readonly address: string,
  ) {}

  static async start(...extra: string[]): Promise<CoapDevice> {
    const port = await new Promise<number>((ok) => {
      const s = createSocket("udp4");
      s.bind(0, "127.0.0.1", () => {
        const p = s.address().port;
        s.close(() => ok(p));
      });
    });
    const python = join(ROOT, ".venv/bin/python");
    const proc = spawn(python, [join(ROOT, "tests/e2e/coap_device.py"), "--port", String(port), ...extra], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    await new Promise<void>((ok, fail) => {
      const timer = setTimeout(() => fail(new Error("the CoAP device did not start in 10 s")), 10_000);
      createInterface({ input: proc.stdout! }).once("line", (line) => {
        clearTimeout(timer);
        line.startsWith("ready") ? ok() : fail(new Error(`the CoAP device said ${line}`));
      });
    });
    return new CoapDevice(proc, `127.0.0.1:${port}`);
  }

  kill(): void {
    this.proc.kill("SIGKILL");
  }
}

/** Debian's chromium with a fresh profile (no browser download, no network but loopback). */
export async function browser(): Promise<BrowserContext> {
  const profile = mkdtempSync(join(tmpdir(), "vigil-chromium-"));
  return chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    acceptDownloads: true,
    viewport: { width: 1440, height: 900 },
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

/** Saves a screenshot of the page under artifacts/browser/. */
export async function shot(page: Page, name: string): Promise<void> {
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: false });
}

/** Polls `f` until it returns a truthy value (at most `ms`). */
export async function until<T>(f: () => Promise<T> | T, ms = 10_000, what = "condition"): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
