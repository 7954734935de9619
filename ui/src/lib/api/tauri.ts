// The desktop window's transport: the same API calls as over HTTP, carried by
// Tauri's IPC to the `request` command (which hands them to the very router
// `vigil serve` serves), and the engine's live events as batches on one Tauri
// event. Loaded only inside the desktop app.
import { invoke } from "@tauri-apps/api/core";
import { listen } from "@tauri-apps/api/event";
import { ApiError, type EventHandlers, type EventName, type Transport } from "./transport";

interface Answer {
  status: number;
  body: unknown;
}

interface Entry {
  name: EventName | "resync";
  data: unknown;
}

async function request<T>(method: string, path: string, body?: unknown): Promise<T> {
  const answer = await invoke<Answer>("request", { method, path, body: body ?? null });
  if (answer.status >= 400) {
    const b = answer.body as { error?: unknown } | null;
    throw new ApiError(typeof b?.error === "string" ? b.error : `status ${answer.status}`, answer.status);
  }
  return answer.body as T;
}

export function tauriTransport(): Transport {
  return {
    get: <T>(path: string) => request<T>("GET", path),
    send: <T>(method: string, path: string, body?: unknown) => request<T>(method, path, body),
    listen(names: EventName[], handlers: EventHandlers) {
      const wanted = new Set<string>(names);
      let stop: (() => void) | null = null;
      let stopped = false;
      handlers.state("connecting");
      listen<Entry[]>("vigil://events", (e) => {
        for (const entry of e.payload) {
          if (entry.name === "resync") handlers.resync();
          else if (wanted.has(entry.name)) handlers.event(entry.name, entry.data);
        }
      }).then(
        (unlisten) => {
          if (stopped) unlisten();
          else {
            stop = unlisten;
            handlers.state("open");
          }
        },
        () => handlers.state("lost"),
      );
      return () => {
        stopped = true;
        stop?.();
      };
    },
  };
}

/** Saves `contents` where the user picks in the native save dialog. */
export async function saveAs(name: string, contents: string): Promise<string | null> {
  return invoke<string | null>("save_as", { name, contents });
}

/** A place the desktop shell asks the window to open (`vigil://open`). */
export type Place = { device: string } | "alerts";

/** Calls `open` whenever the shell asks for a place: a click on an alert's
 * notification (its device), the tray's "Active alerts". */
export function followShell(open: (place: Place) => void): void {
  void listen<Place>("vigil://open", (e) => open(e.payload));
}

/** The desktop app's own settings (kept in desktop.json in the data folder). */
export interface DesktopSettings {
  close_to_tray: boolean;
  notify: boolean;
}

export const desktopSettings = () => invoke<DesktopSettings>("desktop_settings");
export const setDesktopSettings = (settings: DesktopSettings) =>
  invoke<DesktopSettings>("set_desktop_settings", { settings });

/** Whether this page runs inside the desktop app. */
export const inDesktop = () => "__TAURI_INTERNALS__" in window;
