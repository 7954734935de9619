// Active alerts kept from the live events themselves. The engine sends an
// alert event before the alert is stored, so re-reading the API on an event
// can miss it; the event carries the whole alert, which is all we need.
import type { Alert, AlertEvent } from "./api/client";

/** The active alerts (newest first) after one alert event. */
export function applyAlertEvent(active: Alert[], event: AlertEvent): Alert[] {
  const rest = active.filter((a) => a.id !== event.alert.id);
  if (event.transition === "cleared" || event.alert.state === "cleared") return rest;
  return [event.alert, ...rest].sort((a, b) => b.id - a.id);
}

/** Active alerts per device. */
export function byDevice(active: Alert[]): Map<string, Alert[]> {
  const m = new Map<string, Alert[]>();
  for (const a of active) {
    const list = m.get(a.device);
    if (list) list.push(a);
    else m.set(a.device, [a]);
  }
  return m;
}
