// The devices as the engine knows them, kept live: presence and "last seen"
// change in place from events; values are re-read for the devices that
// changed, at most once a second (all of them at once when many did).
import type { Api, DeviceRow, PresenceState } from "../api/client";
import type { Live, LiveEvent } from "./live.svelte";

const REFRESH_MS = 1000;
/** Beyond this many changed devices, one full reload is cheaper. */
const FULL_RELOAD_OVER = 50;

export class Devices {
  /** All devices, as one immutable array: replaced, never mutated in place. */
  list = $state.raw<DeviceRow[]>([]);
  loaded = $state(false);
  error = $state<string | null>(null);
  private index = new Map<string, number>();
  /** The latest message time per device, from message events. Kept outside
   * the reactive list on purpose: at thousands of messages a second, the list
   * must not be rebuilt (and re-sorted) for each; the screens read it on
   * their one-second tick. */
  private heard = new Map<string, number>();
  private dirty = new Set<string>();
  private timer: ReturnType<typeof setTimeout> | null = null;
  private fullReload = false;
  /** Pause between refreshes: 1 s, longer after a slow full reload (ten times
   * what it took), so a big fleet under load never keeps the page busy. */
  private pause = REFRESH_MS;

  constructor(
    private readonly api: Api,
    live: Live,
  ) {
    live.subscribe({ events: (b) => this.apply(b), resync: () => this.reload() });
  }

  async reload(): Promise<void> {
    try {
      this.set(await this.api.devices());
      this.loaded = true;
      this.error = null;
    } catch (e) {
      this.error = (e as Error).message;
    }
  }

  get(id: string): DeviceRow | undefined {
    // Read the list first, so that a caller in a reactive context depends on
    // it even when the device is not there yet.
    const list = this.list;
    const i = this.index.get(id);
    return i === undefined ? undefined : list[i];
  }

  /** When the device last gave a sign of life, as fresh as the event stream. */
  lastSeen(d: DeviceRow): number {
    return Math.max(d.presence.last_seen, this.heard.get(d.id) ?? 0);
  }

  counts(): Record<PresenceState, number> {
    const c: Record<PresenceState, number> = { online: 0, stale: 0, offline: 0, sleeping: 0, unknown: 0 };
    for (const d of this.list) if (!d.hidden) c[d.presence.state]++;
    return c;
  }

  private set(list: DeviceRow[]) {
    const previous = this.index.size ? this.list : [];
    const index = this.index;
    this.index = new Map(list.map((d, i) => [d.id, i]));
    this.list = previous.length ? list.map((d) => fresher(d, previous[index.get(d.id) ?? -1])) : list;
  }

  /** Applies one frame's events. */
  apply(batch: LiveEvent[]): void {
    let next: DeviceRow[] | null = null;
    const edit = (id: string, f: (d: DeviceRow) => DeviceRow) => {
      const i = this.index.get(id);
      if (i === undefined) return false;
      next ??= this.list.slice();
      next[i] = f(next[i]);
      return true;
    };
    for (const { name, data } of batch) {
      switch (name) {
        case "message":
          if (data.device) {
            this.heard.set(data.device, data.at);
            this.mark(data.device, !this.index.has(data.device));
          }
          break;
        case "presence":
          if (!edit(data.device, (d) => ({ ...d, presence: { ...d.presence, state: data.to, since: data.at, reason: data.reason } })))
            this.mark(data.device, true);
          else this.mark(data.device, false);
          break;
        case "device":
          this.mark(data.id, !this.index.has(data.id));
          break;
        case "alert":
          this.mark(data.alert.device, false);
          break;
      }
    }
    if (next) this.list = next;
  }

  private mark(id: string, unknown: boolean) {
    if (unknown) this.fullReload = true;
    this.dirty.add(id);
    this.timer ??= setTimeout(() => this.refresh(), this.pause);
  }

  private async refresh() {
    const ids = [...this.dirty];
    const full = this.fullReload || ids.length > FULL_RELOAD_OVER;
    this.dirty.clear();
    this.fullReload = false;
    const started = performance.now();
    try {
      if (full) {
        this.set(await this.api.devices());
        this.pause = Math.min(10_000, Math.max(REFRESH_MS, 10 * (performance.now() - started)));
      } else {
        const fresh = await Promise.all(ids.map((id) => this.api.device(id).catch(() => null)));
        const next = this.list.slice();
        for (const d of fresh) {
          if (!d) continue;
          const i = this.index.get(d.id);
          if (i === undefined) {
            this.index.set(d.id, next.length);
            next.push(d);
          } else next[i] = fresher(d, next[i]);
        }
        this.list = next;
      }
    } catch {
      // The link is probably down; the resync after it comes back reloads.
    } finally {
      this.timer = null;
      if (this.dirty.size) this.timer = setTimeout(() => this.refresh(), this.pause);
    }
  }
}

/** A device as read from the API, keeping the presence we already had from a
 * live event when that is newer: the engine sends presence events before it
 * stores them, so a read right after one can still return the state before. */
export function fresher(read: DeviceRow, local: DeviceRow | undefined): DeviceRow {
  if (!local || local.presence.since <= read.presence.since) return read;
  return { ...read, presence: { ...read.presence, state: local.presence.state, since: local.presence.since, reason: local.presence.reason } };
}
