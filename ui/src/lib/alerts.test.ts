import { describe, expect, it } from "vitest";
import { applyAlertEvent, byDevice } from "./alerts";
import type { Alert } from "./api/client";

const alert = (id: number, device: string, state: Alert["state"] = "firing"): Alert => ({
  id,
  rule_id: 1,
  device,
  severity: "major",
  state,
  fired_at: id,
  acked_at: null,
  acked_by: null,
  cleared_at: null,
  value: null,
  message: `alert ${id}`,
});

describe("active alerts from events", () => {
  it("fired adds, acknowledged replaces, cleared removes; newest first", () => {
    let active: Alert[] = [];
    active = applyAlertEvent(active, { transition: "fired", alert: alert(1, "a") });
    active = applyAlertEvent(active, { transition: "fired", alert: alert(3, "b") });
    active = applyAlertEvent(active, { transition: "fired", alert: alert(2, "a") });
    expect(active.map((a) => a.id)).toEqual([3, 2, 1]);
    active = applyAlertEvent(active, { transition: "acknowledged", alert: { ...alert(2, "a"), state: "acknowledged", acked_by: "Kim" } });
    expect(active.find((a) => a.id === 2)?.acked_by).toBe("Kim");
    expect(active.length).toBe(3);
    active = applyAlertEvent(active, { transition: "cleared", alert: alert(1, "a", "cleared") });
    expect(active.map((a) => a.id)).toEqual([3, 2]);
    expect(byDevice(active).get("a")?.map((a) => a.id)).toEqual([2]);
    expect(byDevice(active).get("c")).toBeUndefined();
  });
});
