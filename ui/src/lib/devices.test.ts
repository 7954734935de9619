import { describe, expect, it } from "vitest";
import { filterDevices, sortDevices, type DeviceFilter } from "./devices";
import type { DeviceRow, PresenceState } from "./api/client";

const dev = (id: string, state: PresenceState, extra: Partial<DeviceRow> = {}): DeviceRow => ({
  id,
  convention: "topic",
  root: null,
  client_id: null,
  name: null,
  model: null,
  manufacturer: null,
  firmware: null,
  display_name: null,
  group: null,
  hidden: false,
  expected_interval: null,
  presence: { state, since: 0, reason: "", last_seen: 0, learned_interval: null, expected_interval: null, stale_after: null },
  first_seen: 0,
  last_seen: 0,
  message_count: 0,
  metrics: [],
  alerts: [],
  ...extra,
});

const none: DeviceFilter = { text: "", presence: "", group: "", convention: "", showHidden: false };

describe("device list", () => {
  const list = [
    dev("plug10", "online", { convention: "tasmota", group: "Kitchen" }),
    dev("plug9", "offline", { display_name: "Fridge plug", group: "Kitchen" }),
    dev("oxi", "stale", { group: "Mrs Smith", metrics: [{ name: "spo2", value: 97, at: 0, unit: "%", stale: false }] }),
    dev("ghost", "offline", { hidden: true }),
  ];
  it("puts what needs attention first: offline, then stale", () => {
    expect(sortDevices(filterDevices(list, none), "attention").map((d) => d.id)).toEqual(["plug9", "oxi", "plug10"]);
  });
  it("sorts names naturally (plug9 before plug10) using the name people gave", () => {
    expect(sortDevices(list, "name").map((d) => d.id)).toEqual(["plug9", "ghost", "oxi", "plug10"]);
  });
  it("filters by text (names, groups, metrics), presence, group, convention, hidden", () => {
    const ids = (f: Partial<DeviceFilter>) => filterDevices(list, { ...none, ...f }).map((d) => d.id);
    expect(ids({ text: "fridge" })).toEqual(["plug9"]);
    expect(ids({ text: "SPO2" })).toEqual(["oxi"]);
    expect(ids({ presence: "offline" })).toEqual(["plug9"]);
    expect(ids({ presence: "offline", showHidden: true })).toEqual(["plug9", "ghost"]);
    expect(ids({ group: "Kitchen" })).toEqual(["plug10", "plug9"]);
    expect(ids({ convention: "tasmota" })).toEqual(["plug10"]);
  });
});

import { fresher } from "./stores/devices.svelte";

describe("merging a device read after a presence event", () => {
  it("keeps the newer presence from the event, takes everything else from the read", () => {
    const local = dev("oxi", "offline", { presence: { ...dev("oxi", "offline").presence, since: 200, reason: "connection lost" } });
    const stale = dev("oxi", "online", { message_count: 9, presence: { ...dev("oxi", "online").presence, since: 100 } });
    const merged = fresher(stale, local);
    expect(merged.presence.state).toBe("offline");
    expect(merged.presence.reason).toBe("connection lost");
    expect(merged.message_count).toBe(9);
    const newer = dev("oxi", "online", { presence: { ...dev("oxi", "online").presence, since: 300 } });
    expect(fresher(newer, local).presence.state).toBe("online");
    expect(fresher(newer, undefined)).toBe(newer);
  });
});
