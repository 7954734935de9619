// MQTT topic filters and the inspector's topic tree.

/** Whether `topic` matches the MQTT filter (`+` one level, `#` the rest).
 * As the specification says, a filter starting with a wildcard does not match
 * topics starting with `$`. */
export function matches(filter: string, topic: string): boolean {
  if (filter === "") return true;
  const f = filter.split("/");
  const t = topic.split("/");
  if ((f[0] === "+" || f[0] === "#") && topic.startsWith("$")) return false;
  for (let i = 0; i < f.length; i++) {
    if (f[i] === "#") return i === f.length - 1;
    if (i >= t.length) return false;
    if (f[i] !== "+" && f[i] !== t[i]) return false;
  }
  return f.length === t.length;
}

/** Whether a filter is well formed: `#` only last and alone in its level,
 * `+` alone in its level. Returns the problem in words, or null. */
export function filterProblem(filter: string): string | null {
  const levels = filter.split("/");
  for (let i = 0; i < levels.length; i++) {
    const l = levels[i];
    if (l.includes("#") && (l !== "#" || i !== levels.length - 1)) return "'#' must be the whole last level";
    if (l.includes("+") && l !== "+") return "'+' must be a whole level";
  }
  return null;
}

/** One node of the topic tree. */
export interface TopicNode {
  name: string;
  path: string;
  children: Map<string, TopicNode>;
  /** Messages on this exact topic, and on it and below. */
  count: number;
  total: number;
  /** Arrival times (ms) of recent messages at and below, for the rate. */
  recent: number[];
}

const RATE_WINDOW_MS = 10_000;

export function newNode(name = "", path = ""): TopicNode {
  return { name, path, children: new Map(), count: 0, total: 0, recent: [] };
}

/** Counts one message into the tree. `recent` keeps at most a window's worth. */
export function add(root: TopicNode, topic: string, atMs: number): void {
  let node = root;
  node.total++;
  pushRecent(node, atMs);
  for (const level of topic.split("/")) {
    let child = node.children.get(level);
    if (!child) {
      child = newNode(level, node.path ? `${node.path}/${level}` : level);
      node.children.set(level, child);
    }
    node = child;
    node.total++;
    pushRecent(node, atMs);
  }
  node.count++;
}

function pushRecent(node: TopicNode, atMs: number) {
  node.recent.push(atMs);
  // Bounded: trim by time once in a while rather than on every push.
  if (node.recent.length > 4096) node.recent.splice(0, node.recent.length - 2048);
}

/** Messages per second at and below `node` over the last 10 s. */
export function rate(node: TopicNode, nowMs: number): number {
  const since = nowMs - RATE_WINDOW_MS;
  let i = 0;
  while (i < node.recent.length && node.recent[i] < since) i++;
  if (i > 0) node.recent.splice(0, i);
  return node.recent.length / (RATE_WINDOW_MS / 1000);
}
