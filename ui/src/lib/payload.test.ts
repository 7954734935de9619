import { describe, expect, it } from "vitest";
import { CSV_COLUMNS, decodeBase64, diffLines, hexDump, parseCsv, prettyJson, toCsv } from "./payload";
import { compileFilter, mergeWindow } from "./inspector";
import type { MessageView } from "./api/client";

const msg = (id: number, topic: string, text: string | null, extra: Partial<MessageView> = {}): MessageView => ({
  id,
  at: 1_700_000_000_000_000 + id,
  topic,
  device: topic.split("/")[0],
  client_id: "c1",
  qos: 1,
  retain: false,
  size: text?.length ?? 0,
  payload_base64: btoa(text ?? ""),
  payload_text: text,
  properties: null,
  kind: "text",
  decode_error: null,
  metrics: [],
  structure: null,
  ...extra,
});

describe("payload views", () => {
  it("hex dump shows offsets, bytes and printable text", () => {
    const dump = hexDump(new Uint8Array([0x48, 0x69, 0x00, 0xff, ...Array(16).fill(0x41)]));
    const lines = dump.split("\n");
    expect(lines[0]).toMatch(/^00000000  48 69 00 ff 41/);
    expect(lines[0].endsWith("Hi..AAAAAAAAAAAA")).toBe(true);
    expect(lines[1]).toMatch(/^00000010  41 41 41 41 {38}AAAA$/);
  });
  it("pretty JSON only for JSON", () => {
    expect(prettyJson('{"a":[1,2]}')).toBe('{\n  "a": [\n    1,\n    2\n  ]\n}');
    expect(prettyJson("21.5")).toBe("21.5");
    expect(prettyJson("ON")).toBeNull();
    expect(prettyJson("{broken")).toBeNull();
    expect(prettyJson(null)).toBeNull();
  });
  it("base64 round trip keeps every byte", () => {
    const bytes = decodeBase64(btoa(String.fromCharCode(...Array.from({ length: 256 }, (_, i) => i))));
    expect(Array.from(bytes)).toEqual(Array.from({ length: 256 }, (_, i) => i));
  });
  it("diff marks what changed line by line", () => {
    expect(diffLines("a\nb\nc", "a\nB\nc")).toEqual([
      { op: " ", text: "a" },
      { op: "-", text: "b" },
      { op: "+", text: "B" },
      { op: " ", text: "c" },
    ]);
    // Too big to compare line by line: all out, all in, never a frozen page.
    const big = diffLines("x\n".repeat(3000), "y\n".repeat(3000), 1000);
    expect(big.length).toBe(6002);
  });
  it("CSV quotes what needs quoting and reads back the same", () => {
    const messages = [msg(1, "a/b", 'say "hi", then\nleave'), msg(2, "a/c", null, { kind: "binary", size: 3, payload_base64: "AAEC" })];
    const csv = toCsv(messages);
    const [header, ...rows] = parseCsv(csv);
    expect(header).toEqual([...CSV_COLUMNS]);
    expect(rows.length).toBe(2);
    expect(rows[0][CSV_COLUMNS.indexOf("payload_text")]).toBe('say "hi", then\nleave');
    expect(rows[1][CSV_COLUMNS.indexOf("payload_text")]).toBe("");
    expect(rows[1][CSV_COLUMNS.indexOf("payload_base64")]).toBe("AAEC");
  });
});

describe("inspector filter and window", () => {
  const list = [msg(3, "site/a/temp", '{"v":1}'), msg(2, "site/b/hum", "ALARM"), msg(1, "other/a/temp", "ok")];
  it("combines wildcard, regex and payload text", () => {
    const f = (spec: { wildcard?: string; regex?: string; text?: string }) => {
      const c = compileFilter({ wildcard: "", regex: "", text: "", ...spec });
      if ("error" in c) throw new Error(c.error);
      return list.filter(c.test).map((m) => m.id);
    };
    expect(f({ wildcard: "site/#" })).toEqual([3, 2]);
    expect(f({ wildcard: "+/a/temp" })).toEqual([3, 1]);
    expect(f({ regex: "^(other|site/b)" })).toEqual([2, 1]);
    expect(f({ text: "alarm" })).toEqual([2]);
    expect(f({ wildcard: "site/#", text: "v" })).toEqual([3]);
  });
  it("says when a regex is not one", () => {
    expect(compileFilter({ wildcard: "", regex: "(", text: "" })).toHaveProperty("error");
  });
  it("merges new messages on top without duplicates and stays bounded", () => {
    const merged = mergeWindow(list, [msg(5, "x", "5"), msg(4, "x", "4"), msg(3, "site/a/temp", "dup")], 4);
    expect(merged.map((m) => m.id)).toEqual([5, 4, 3, 2]);
  });
});
