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
  /** `total` at each of the last samples (one a second, at most 11), for the rate. */
  history: number[];
}

const RATE_SAMPLES = 11;

export function newNode(name = "", path = ""): TopicNode {
  return { name, path, children: new Map(), count: 0, total: 0, history: [] };
}

/** Counts one message into the tree: O(levels), no allocation once the topic is known. */
export function add(root: TopicNode, topic: string): void {
  let node = root;
  node.total++;
  for (const level of topic.split("/")) {
    let child = node.children.get(level);
    if (!child) {
      child = newNode(level, node.path || node !== root ? `${node.path}/${level}` : level);
      node.children.set(level, child);
    }
    node = child;
    node.total++;
  }
  node.count++;
}

/** Records every node's total; call once a second. */
export function sample(node: TopicNode): void {
  node.history.push(node.total);
  if (node.history.length > RATE_SAMPLES) node.history.shift();
  for (const c of node.children.values()) sample(c);
}

/** Messages per second at and below `node`, over the last (up to) 10 samples. */
export function rate(node: TopicNode): number {
  const h = node.history;
  if (h.length < 2) return 0;
  return (h[h.length - 1] - h[0]) / (h.length - 1);
}

/** One line of the tree as shown. */
export interface TopicRow {
  path: string;
  name: string;
  depth: number;
  total: number;
  rate: number;
  branch: boolean;
  open: boolean;
}

/** The tree as rows, depth first, names in natural order; `open(path)` says
 * which branches are expanded. At most `limit` rows. */
export function rows(root: TopicNode, open: (node: TopicNode, depth: number) => boolean, limit = 500): TopicRow[] {
  const out: TopicRow[] = [];
  const collator = new Intl.Collator(undefined, { numeric: true });
  const walk = (node: TopicNode, depth: number) => {
    const children = [...node.children.values()].sort((a, b) => collator.compare(a.name, b.name));
    for (const c of children) {
      if (out.length >= limit) return;
      const isOpen = c.children.size > 0 && open(c, depth);
      out.push({ path: c.path, name: c.name, depth, total: c.total, rate: rate(c), branch: c.children.size > 0, open: isOpen });
      if (isOpen) walk(c, depth + 1);
    }
  };
  walk(root, 0);
  return out;
}
