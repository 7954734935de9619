// How the UI reaches the engine. Two implementations share this interface:
// HTTP + SSE against `vigil serve` (./http.ts), and Tauri invoke + events in
// the desktop window (./tauri.ts).

/** The live event names the engine sends (see docs/API.md). */
export type EventName = "message" | "connection" | "flushed" | "device" | "presence" | "alert";

/** Whether the live stream is up. */
export type LinkState = "connecting" | "open" | "lost";

export interface EventHandlers {
  /** One event, already parsed. */
  event(name: EventName, data: unknown): void;
  /** Events were missed (the listener fell behind, or the link was down): reload. */
  resync(): void;
  /** The link changed state. */
  state(state: LinkState): void;
}

export interface Transport {
  /** GET a JSON resource; rejects with an `ApiError`. */
  get<T>(path: string): Promise<T>;
  /** POST, PUT, PATCH or DELETE with a JSON body; resolves to the JSON answer (or null). */
  send<T>(method: "POST" | "PUT" | "PATCH" | "DELETE", path: string, body?: unknown): Promise<T>;
  /** Listens to live events until the returned function is called. */
  listen(names: EventName[], handlers: EventHandlers): () => void;
}

/** An error the engine answered with: its sentence, and the HTTP status. */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}
