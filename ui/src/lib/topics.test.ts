import { describe, expect, it } from "vitest";
import { add, filterProblem, matches, newNode, rate, rows, sample } from "./topics";

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
  it("counts per topic and per subtree", () => {
    const root = newNode();
    for (let i = 0; i < 20; i++) add(root, "home/kitchen/temp");
    add(root, "home/hall/temp");
    add(root, "home");
    add(root, "/leading");
    const home = root.children.get("home")!;
    expect(root.total).toBe(23);
    expect(home.total).toBe(22);
    expect(home.count).toBe(1);
    expect(home.children.get("kitchen")!.children.get("temp")!.count).toBe(20);
    expect(home.children.get("hall")!.path).toBe("home/hall");
    expect(root.children.get("")!.children.get("leading")!.path).toBe("/leading");
  });
  it("rates from one-second samples, over at most ten seconds", () => {
    const root = newNode();
    sample(root);
    expect(rate(root)).toBe(0);
    for (let s = 0; s < 15; s++) {
      for (let i = 0; i < 30; i++) add(root, "a/b");
      sample(root);
    }
    expect(rate(root)).toBe(30);
    expect(rate(root.children.get("a")!)).toBe(30);
    sample(root); // a silent second
    expect(rate(root)).toBe(27);
  });
  it("rows: depth first, natural order, closed branches hidden, bounded", () => {
    const root = newNode();
    for (const t of ["s/10/t", "s/9/t", "s/9/h", "z"]) add(root, t);
    const all = rows(root, () => true).map((r) => `${"  ".repeat(r.depth)}${r.name}`);
    expect(all).toEqual(["s", "  9", "    h", "    t", "  10", "    t", "z"]);
    const closed = rows(root, (n) => n.path !== "s/9").map((r) => r.path);
    expect(closed).toEqual(["s", "s/9", "s/10", "s/10/t", "z"]);
    expect(rows(root, () => true, 3).length).toBe(3);
  });
});
