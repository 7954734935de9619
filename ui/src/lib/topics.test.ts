import { describe, expect, it } from "vitest";
import { add, filterProblem, matches, newNode, rate } from "./topics";

describe("MQTT filters", () => {
  it("match as the specification says", () => {
    expect(matches("a/+/c", "a/b/c")).toBe(true);
    expect(matches("a/+/c", "a/b/d")).toBe(false);
    expect(matches("a/+/c", "a/b/c/d")).toBe(false);
    expect(matches("a/#", "a")).toBe(true); // '#' includes the parent level
    expect(matches("a/#", "a/b/c")).toBe(true);
    expect(matches("#", "anything/at/all")).toBe(true);
    expect(matches("+/+", "a/")).toBe(true); // empty levels are levels
    expect(matches("a/b", "a/b/")).toBe(false);
    expect(matches("", "x")).toBe(true);
  });
  it("wildcards at the start do not match $-topics", () => {
    expect(matches("#", "$SYS/broker/uptime")).toBe(false);
    expect(matches("+/broker/uptime", "$SYS/broker/uptime")).toBe(false);
    expect(matches("$SYS/#", "$SYS/broker/uptime")).toBe(true);
  });
  it("malformed filters are explained", () => {
    expect(filterProblem("a/#/b")).toMatch(/last level/);
    expect(filterProblem("a/b#")).toMatch(/last level/);
    expect(filterProblem("a/b+/c")).toMatch(/whole level/);
    expect(filterProblem("a/+/#")).toBeNull();
  });
});

describe("topic tree", () => {
  it("counts per topic and per subtree, and rates over 10 s", () => {
    const root = newNode();
    const t0 = 1_000_000;
    for (let i = 0; i < 20; i++) add(root, "home/kitchen/temp", t0 + i * 100);
    add(root, "home/hall/temp", t0);
    add(root, "home", t0);
    const home = root.children.get("home")!;
    expect(root.total).toBe(22);
    expect(home.total).toBe(22);
    expect(home.count).toBe(1);
    expect(home.children.get("kitchen")!.children.get("temp")!.count).toBe(20);
    expect(home.children.get("hall")!.path).toBe("home/hall");
    expect(rate(home.children.get("kitchen")!, t0 + 5_000)).toBe(2);
    expect(rate(home.children.get("kitchen")!, t0 + 60_000)).toBe(0);
  });
});
