import { describe, expect, it } from "vitest";
import { ago, bytes, duration, value } from "./format";

const S = 1_000_000;

describe("format", () => {
  it("says how long ago, growing units", () => {
    const now = 1_800_000_000 * S;
    expect(ago(0, now)).toBe("never");
    expect(ago(now, now)).toBe("just now");
    expect(ago(now - 12 * S, now)).toBe("12 s ago");
    expect(ago(now - 5 * 60 * S, now)).toBe("5 min ago");
    expect(ago(now - 3 * 3600 * S, now)).toBe("3 h ago");
    expect(ago(now - 3 * 86400 * S, now)).toBe("3 d ago");
    // A clock slightly behind the server's never shows negative times.
    expect(ago(now + 5 * S, now)).toBe("just now");
  });
  it("sizes in binary units, exact bytes below a KiB", () => {
    expect(bytes(0)).toBe("0 B");
    expect(bytes(1023)).toBe("1023 B");
    expect(bytes(300 * 1024)).toBe("300.0 KiB");
    expect(bytes(1.5 * 1024 * 1024)).toBe("1.5 MiB");
  });
  it("values keep their units and sensible digits", () => {
    expect(value(21.456, "°C")).toBe("21.46 °C");
    expect(value(97, "%")).toBe("97%");
    expect(value(1234.5, "W")).toBe("1,235 W");
    expect(value(0.00123)).toBe("0.0012");
  });
  it("durations", () => {
    expect(duration(1.5 * S)).toBe("1.5 s");
    expect(duration(45 * S)).toBe("45 s");
    expect(duration(120 * S)).toBe("2 min");
    expect(duration(190 * 60 * S)).toBe("3 h 10 min");
  });
});
