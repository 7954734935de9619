// Live updates arrive far faster than a screen refreshes (10,000 messages a
// second). A batcher collects them and hands them over at most once per
// animation frame, so the page does one update per frame whatever the rate.

export type Scheduler = (flush: () => void) => void;

/** requestAnimationFrame when the page is visible; a timer otherwise (hidden
 * tabs get no frames, and the queue must not grow without bound). */
export const frameScheduler: Scheduler = (flush) => {
  if (typeof document !== "undefined" && document.visibilityState === "visible" && typeof requestAnimationFrame === "function") {
    requestAnimationFrame(flush);
  } else {
    setTimeout(flush, 250);
  }
};

export class Batcher<T> {
  private queue: T[] = [];
  private scheduled = false;
  /** Items dropped because the queue was full since the last flush. */
  dropped = 0;

  constructor(
    private readonly apply: (items: T[], dropped: number) => void,
    private readonly schedule: Scheduler = frameScheduler,
    /** The most items kept between two flushes; older ones are dropped (and counted). */
    private readonly limit = 50_000,
  ) {}

  push(item: T): void {
    if (this.queue.length >= this.limit) {
      this.queue.shift();
      this.dropped++;
    }
    this.queue.push(item);
    if (!this.scheduled) {
      this.scheduled = true;
      this.schedule(() => this.flush());
    }
  }

  /** Applies what is queued now. */
  flush(): void {
    this.scheduled = false;
    if (this.queue.length === 0) return;
    const items = this.queue;
    const dropped = this.dropped;
    this.queue = [];
    this.dropped = 0;
    this.apply(items, dropped);
  }

  get pending(): number {
    return this.queue.length;
  }
}

/** Calls `fn` at most once per `ms`, with the latest call's effect (trailing). */
export function throttle(fn: () => void, ms: number): () => void {
  let timer: ReturnType<typeof setTimeout> | null = null;
  let last = 0;
  return () => {
    if (timer) return;
    const wait = Math.max(0, last + ms - Date.now());
    timer = setTimeout(() => {
      timer = null;
      last = Date.now();
      fn();
    }, wait);
  };
}
