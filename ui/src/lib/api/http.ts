// The browser's transport: fetch for requests, one EventSource for live events.
// EventSource reconnects by itself; every reconnect is also a resync, since
// whatever happened while the link was down was missed.
import { ApiError, type EventHandlers, type EventName, type Transport } from "./transport";

async function answer<T>(response: Response): Promise<T> {
  const text = await response.text();
  const body = text ? JSON.parse(text) : null;
  if (!response.ok) {
    const message = body && typeof body.error === "string" ? body.error : `${response.status} ${response.statusText}`;
    throw new ApiError(message, response.status);
  }
  return body as T;
}

export function httpTransport(base = ""): Transport {
  return {
    async get<T>(path: string) {
      return answer<T>(await fetch(base + path, { headers: { accept: "application/json" } }));
    },
    async send<T>(method: string, path: string, body?: unknown) {
      const init: RequestInit = { method, headers: { "content-type": "application/json" } };
      if (body !== undefined) init.body = JSON.stringify(body);
      return answer<T>(await fetch(base + path, init));
    },
    listen(names: EventName[], handlers: EventHandlers) {
      let source: EventSource | null = null;
      let stopped = false;
      let retry: ReturnType<typeof setTimeout> | null = null;
      let delay = 500;
      let wasOpen = false;
      const open = () => {
        handlers.state("connecting");
        source = new EventSource(`${base}/api/events?types=${names.join(",")}`);
        source.onopen = () => {
          delay = 500;
          handlers.state("open");
          // Anything may have changed while the link was down.
          if (wasOpen) handlers.resync();
          wasOpen = true;
        };
        source.onerror = () => {
          // Closed for good (e.g. the server stopped): reconnect ourselves,
          // backing off to 5 s.
          handlers.state("lost");
          source?.close();
          if (!stopped) {
            retry = setTimeout(open, delay);
            delay = Math.min(delay * 2, 5000);
          }
        };
        for (const name of names) {
          source.addEventListener(name, (e) => handlers.event(name, JSON.parse((e as MessageEvent).data)));
        }
        source.addEventListener("resync", () => handlers.resync());
      };
      open();
      return () => {
        stopped = true;
        if (retry) clearTimeout(retry);
        source?.close();
      };
    },
  } as Transport;
}
