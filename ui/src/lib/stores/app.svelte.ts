// What every screen shares: the API, the live link, devices, active alerts,
// the route, the theme and a clock that ticks once a second.
import { api as makeApi, type Alert, type AlertEvent, type Api } from "../api/client";
import { applyAlertEvent, byDevice } from "../alerts";
import type { Transport } from "../api/transport";
import { throttle } from "../coalesce";
import { nowMicros } from "../format";
import { Devices } from "./devices.svelte";
import { Live } from "./live.svelte";

export type Theme = "system" | "light" | "dark";

export class AppState {
  readonly api: Api;
  readonly live: Live;
  readonly devices: Devices;
  /** Alerts not cleared, newest first: loaded, then kept from alert events. */
  activeAlerts = $state.raw<Alert[]>([]);
  alertsByDevice = $derived(byDevice(this.activeAlerts));
  route = $state(parseRoute(location.hash));
  now = $state(nowMicros());
  theme = $state<Theme>((localStorage.getItem("vigil.theme") as Theme) || "system");

  constructor(transport: Transport) {
    this.api = makeApi(transport);
    this.live = new Live(transport);
    this.devices = new Devices(this.api, this.live);
    const reloadAlerts = throttle(() => this.reloadAlerts(), 500);
    this.live.subscribe({
      events: (batch) => {
        let active = this.activeAlerts;
        for (const e of batch) if (e.name === "alert") active = applyAlertEvent(active, e.data as AlertEvent);
        if (active !== this.activeAlerts) this.activeAlerts = active;
      },
      resync: () => reloadAlerts(),
    });
    addEventListener("hashchange", () => (this.route = parseRoute(location.hash)));
    setInterval(() => (this.now = nowMicros()), 1000);
    this.applyTheme();
  }

  start(): void {
    this.live.start();
    void this.devices.reload();
    void this.reloadAlerts();
  }

  /** The device's active alerts, newest first. */
  alertsFor(device: string): Alert[] {
    return this.alertsByDevice.get(device) ?? [];
  }

  async reloadAlerts(): Promise<void> {
    try {
      this.activeAlerts = await this.api.alerts(true);
    } catch {
      /* shown by the link banner */
    }
  }

  setTheme(theme: Theme): void {
    this.theme = theme;
    localStorage.setItem("vigil.theme", theme);
    this.applyTheme();
  }

  private applyTheme() {
    const root = document.documentElement;
    if (this.theme === "system") root.removeAttribute("data-theme");
    else root.dataset.theme = this.theme;
  }
}

export type Route =
  | { screen: "devices" }
  | { screen: "device"; id: string }
  | { screen: "inspector" }
  | { screen: "alerts" }
  | { screen: "broker" }
  | { screen: "settings" };

export function parseRoute(hash: string): Route {
  const [screen, ...rest] = hash.replace(/^#\/?/, "").split("/");
  switch (screen) {
    case "device":
      return { screen: "device", id: decodeURIComponent(rest.join("/")) };
    case "inspector":
    case "alerts":
    case "broker":
    case "settings":
      return { screen };
    default:
      return { screen: "devices" };
  }
}

export const deviceHref = (id: string) => `#/device/${encodeURIComponent(id)}`;
