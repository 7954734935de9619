// One live link to the engine for the whole page, fanned out to whoever
// listens. Events are batched per animation frame before anyone sees them.
import { Batcher } from "../coalesce";
import type { EventName, LinkState, Transport } from "../api/transport";

export type LiveEvent = { name: EventName; data: any };
type Listener = { events(batch: LiveEvent[]): void; resync(): void };

export class Live {
  state = $state<LinkState>("connecting");
  /** When the link was lost (ms), for "disconnected for 12 s". */
  lostAt = $state<number | null>(null);
  private listeners = new Set<Listener>();
  private batcher = new Batcher<LiveEvent>((batch, dropped) => {
    for (const l of this.listeners) l.events(batch);
    // Events were lost while the page could not keep up: what it shows may be stale.
    if (dropped) for (const l of this.listeners) l.resync();
  });
  private stop: (() => void) | null = null;

  constructor(private readonly transport: Transport) {}

  start(): void {
    const names: EventName[] = ["message", "connection", "device", "presence", "alert", "flushed"];
    this.stop = this.transport.listen(names, {
      event: (name, data) => this.batcher.push({ name, data }),
      resync: () => {
        this.batcher.flush();
        for (const l of this.listeners) l.resync();
      },
      state: (s) => {
        if (s === "lost" && this.state !== "lost") this.lostAt = Date.now();
        if (s === "open") this.lostAt = null;
        this.state = s;
      },
    });
  }

  close(): void {
    this.stop?.();
  }

  /** Receives batches of events; returns the function that stops it. */
  subscribe(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}
