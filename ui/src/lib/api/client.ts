// The engine's API, typed with the types generated from the Rust code
// (./generated, `make types`): the UI cannot drift from the engine unnoticed.
import type { Alert } from "./generated/Alert";
import type { AlertRule } from "./generated/AlertRule";
import type { BrokerView } from "./generated/BrokerView";
import type { CertificatesView } from "./generated/CertificatesView";
import type { CertInfo } from "./generated/CertInfo";
import type { CoapDeviceView } from "./generated/CoapDeviceView";
import type { CoapRequestBody } from "./generated/CoapRequestBody";
import type { CoapResponseView } from "./generated/CoapResponseView";
import type { CoapView } from "./generated/CoapView";
import type { DiscoveryView } from "./generated/DiscoveryView";
import type { IssuedView } from "./generated/IssuedView";
import type { DeviceRow } from "./generated/DeviceRow";
import type { DeviceSettings } from "./generated/DeviceSettings";
import type { MessageView } from "./generated/MessageView";
import type { PresenceChange } from "./generated/PresenceChange";
import type { PublishRequest } from "./generated/PublishRequest";
import type { Series } from "./generated/Series";
import type { SettingsUpdate } from "./generated/SettingsUpdate";
import type { Stats } from "./generated/Stats";
import type { Transport } from "./transport";

export type * from "./generated/Alert";
export type { AlertRule, BrokerView, CertificatesView, CertInfo, DeviceRow, IssuedView, MessageView, PresenceChange, Series, Stats };
export type { CoapDeviceView, CoapRequestBody, CoapResponseView, CoapView, DiscoveryView };
export type { CoapResource } from "./generated/CoapResource";
export type { AlertEvent } from "./generated/AlertEvent";
export type { Condition } from "./generated/Condition";
export type { ClientView } from "./generated/ClientView";
export type { ConnectionEvent } from "./generated/ConnectionEvent";
export type { DeviceEvent } from "./generated/DeviceEvent";
export type { FlushedEvent } from "./generated/FlushedEvent";
export type { MessageEvent } from "./generated/MessageEvent";
export type { MetricRow } from "./generated/MetricRow";
export type { PresenceState } from "./generated/PresenceState";
export type { PresenceTransition } from "./generated/PresenceTransition";
export type { Severity } from "./generated/Severity";

/** A series as the API answers it: the store's, plus what was asked. */
export type SeriesAnswer = Series & { device: string; metric: string };

export interface MessageFilter {
  topic?: string;
  device?: string;
  before?: number;
  after?: number;
  limit?: number;
}

const q = (params: Record<string, string | number | undefined>) => {
  const s = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== "") s.set(k, String(v));
  const text = s.toString();
  return text ? `?${text}` : "";
};

const id = encodeURIComponent;

export function api(t: Transport) {
  return {
    devices: () => t.get<DeviceRow[]>("/api/devices"),
    device: (device: string) => t.get<DeviceRow>(`/api/devices/${id(device)}`),
    updateDevice: (device: string, update: SettingsUpdate) =>
      t.send<DeviceSettings>("PATCH", `/api/devices/${id(device)}`, update),
    presence: (device: string, from?: number, to?: number, limit = 500) =>
      t.get<PresenceChange[]>(`/api/devices/${id(device)}/presence${q({ from, to, limit })}`),
    series: (device: string, metric: string, from: number, to: number, maxPoints: number) =>
      t.get<SeriesAnswer>(
        `/api/devices/${id(device)}/metrics/${id(metric)}${q({ from, to, max_points: maxPoints })}`,
      ),
    messages: (f: MessageFilter = {}) => t.get<MessageView[]>(`/api/messages${q({ ...f })}`),
    publish: (request: PublishRequest) => t.send<{ ok: boolean }>("POST", "/api/publish", request),
    alerts: (active: boolean, device?: string, limit = 200) =>
      t.get<Alert[]>(`/api/alerts${q({ state: active ? "active" : "all", device, limit })}`),
    acknowledge: (alert: number, by?: string) =>
      t.send<Alert>("POST", `/api/alerts/${alert}/ack`, by ? { by } : {}),
    rules: () => t.get<AlertRule[]>("/api/alert-rules"),
    createRule: (rule: AlertRule) => t.send<AlertRule>("POST", "/api/alert-rules", rule),
    replaceRule: (rule: AlertRule) => t.send<AlertRule>("PUT", `/api/alert-rules/${rule.id}`, rule),
    deleteRule: (rule: number) => t.send<null>("DELETE", `/api/alert-rules/${rule}`),
    stats: () => t.get<Stats>("/api/stats"),
    broker: () => t.get<BrokerView>("/api/broker"),
    settings: () => t.get<Record<string, unknown>>("/api/settings"),
    certificates: () => t.get<CertificatesView>("/api/certs"),
    issueCertificate: (device: string) => t.send<IssuedView>("POST", "/api/certs", { device }),
    revokeCertificate: (device: string) => t.send<CertInfo>("POST", "/api/certs/revoke", { device }),
    coap: () => t.get<CoapView>("/api/coap"),
    coapDiscover: () => t.send<DiscoveryView>("POST", "/api/coap/discover", {}),
    coapScan: (range: string) => t.send<DiscoveryView>("POST", "/api/coap/scan", { range, port: null }),
    coapAdd: (address: string) => t.send<CoapDeviceView>("POST", "/api/coap/devices", { address }),
    coapRequest: (request: CoapRequestBody) => t.send<CoapResponseView>("POST", "/api/coap/request", request),
  };
}

export type Api = ReturnType<typeof api>;
