// Formatting for people: times in µs since 1970, sizes, values with units.

const SECOND = 1_000_000;

/** "just now", "12 s ago", "5 min ago", "3 h ago", "2 d ago"; "never" for 0. */
export function ago(at: number, nowMicros: number): string {
  if (!at) return "never";
  const s = Math.max(0, Math.floor((nowMicros - at) / SECOND));
  if (s < 2) return "just now";
  if (s < 90) return `${s} s ago`;
  const m = Math.floor(s / 60);
  if (m < 90) return `${m} min ago`;
  const h = Math.floor(m / 60);
  if (h < 36) return `${h} h ago`;
  return `${Math.floor(h / 24)} d ago`;
}

/** A duration in µs as "1.5 s", "2 min", "3 h 10 min". */
export function duration(micros: number): string {
  const s = micros / SECOND;
  if (s < 10) return `${+s.toFixed(1)} s`;
  if (s < 90) return `${Math.round(s)} s`;
  const m = Math.round(s / 60);
  if (m < 90) return `${m} min`;
  const h = Math.floor(m / 60);
  return m % 60 ? `${h} h ${m % 60} min` : `${h} h`;
}

/** Bytes as "512 B", "300.0 KiB", "1.2 MiB". */
export function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(2)} GiB`;
}

/** A reading with up to 4 significant decimals and its unit: "21.5 °C", "1,234 W". */
export function value(v: number, unit?: string | null): string {
  const abs = Math.abs(v);
  const digits = abs >= 1000 ? 0 : abs >= 100 ? 1 : abs >= 1 ? 2 : 4;
  const text = v.toLocaleString("en-US", { maximumFractionDigits: digits });
  if (!unit) return text;
  return unit === "%" ? `${text}%` : `${text} ${unit}`;
}

/** A moment as local "2026-11-22 14:03:07" (with milliseconds when asked). */
export function time(at: number, withMillis = false): string {
  const d = new Date(at / 1000);
  const p = (n: number, w = 2) => String(n).padStart(w, "0");
  const base = `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
  return withMillis ? `${base}.${p(d.getMilliseconds(), 3)}` : base;
}

/** Now, in µs since 1970. */
export const nowMicros = () => Date.now() * 1000;
