// The inspector's filter over messages (pure, tested).
import type { MessageView } from "./api/client";
import { matches } from "./topics";

export interface MessageFilterSpec {
  /** An MQTT filter (`+`, `#`); empty: all. */
  wildcard: string;
  /** A regular expression on the topic; empty: all. */
  regex: string;
  /** Text the payload must contain (case-insensitive); empty: all. */
  text: string;
}

/** Compiles a filter, or says what is wrong with it. */
export function compileFilter(spec: MessageFilterSpec): { test: (m: MessageView) => boolean } | { error: string } {
  let re: RegExp | null = null;
  if (spec.regex) {
    try {
      re = new RegExp(spec.regex);
    } catch (e) {
      return { error: `Not a regular expression: ${(e as Error).message}` };
    }
  }
  const text = spec.text.toLowerCase();
  return {
    test: (m) =>
      (!spec.wildcard || matches(spec.wildcard, m.topic)) &&
      (!re || re.test(m.topic)) &&
      (!text || (m.payload_text ?? "").toLowerCase().includes(text)),
  };
}

/** Merges newly fetched messages (newest first) into a window (newest first),
 * keeping at most `limit`, without duplicates. */
export function mergeWindow(window: MessageView[], fresh: MessageView[], limit: number): MessageView[] {
  if (fresh.length === 0) return window;
  const newestKept = window.length ? window[0].id : -Infinity;
  const newer = fresh.filter((m) => m.id > newestKept);
  return newer.concat(window).slice(0, limit);
}
