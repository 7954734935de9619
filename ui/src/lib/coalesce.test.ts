import { describe, expect, it, vi } from "vitest";
import { Batcher, throttle } from "./coalesce";

describe("Batcher", () => {
  it("hands over everything pushed between two frames in one call", () => {
    const frames: (() => void)[] = [];
    const batches: number[][] = [];
    const b = new Batcher<number>((items) => batches.push(items), (f) => frames.push(f));
    for (let i = 0; i < 10_000; i++) b.push(i);
    expect(frames.length).toBe(1); // one frame asked for, however many pushes
    expect(batches).toEqual([]);
    frames[0]();
    expect(batches.length).toBe(1);
    expect(batches[0].length).toBe(10_000);
    expect(batches[0][9_999]).toBe(9_999);
    b.push(1);
    expect(frames.length).toBe(2);
  });
  it("bounds what waits and counts what it dropped, oldest first", () => {
    const frames: (() => void)[] = [];
    let got: number[] = [];
    let lost = -1;
    const b = new Batcher<number>((items, dropped) => ((got = items), (lost = dropped)), (f) => frames.push(f), 100);
    for (let i = 0; i < 250; i++) b.push(i);
    expect(b.pending).toBe(100);
    frames[0]();
    expect(got[0]).toBe(150);
    expect(got.length).toBe(100);
    expect(lost).toBe(150);
  });
  it("a flush with nothing queued calls nobody", () => {
    const apply = vi.fn();
    new Batcher(apply, () => {}).flush();
    expect(apply).not.toHaveBeenCalled();
  });
});

describe("throttle", () => {
  it("runs at most once per interval, trailing", async () => {
    vi.useFakeTimers();
    const fn = vi.fn();
    const t = throttle(fn, 100);
    for (let i = 0; i < 50; i++) t();
    vi.advanceTimersByTime(0);
    expect(fn).toHaveBeenCalledTimes(1);
    t();
    t();
    vi.advanceTimersByTime(50);
    expect(fn).toHaveBeenCalledTimes(1);
    vi.advanceTimersByTime(60);
    expect(fn).toHaveBeenCalledTimes(2);
    vi.useRealTimers();
  });
});
