/**
 * Times as `seng leases` reads and prints them: local time (the machine's timezone, which the
 * output names), ISO 8601 or HH:MM[:SS] today.
 */

const ISO_RE = /^(\d{4}-\d{2}-\d{2})(?:[T ](\d{2}:\d{2}(?::\d{2}(?:\.\d{1,3})?)?))?(Z|[+-]\d{2}:?\d{2})?$/;
const CLOCK_RE = /^(\d{1,2}):(\d{2})(?::(\d{2}))?$/;

/**
 * Parses TIME: ISO 8601 (2026-12-01T10:32, 2026-12-01 10:32:05, …Z or …+02:00; without an
 * offset it is local time) or HH:MM[:SS] today, local time. Undefined if it is neither.
 */
export function parseAt(text: string, now = new Date()): number | undefined {
  const t = text.trim();
  const clock = CLOCK_RE.exec(t);
  if (clock) {
    const [h, m, s] = [Number(clock[1]), Number(clock[2]), Number(clock[3] ?? 0)];
    if (h > 23 || m > 59 || s > 59) return undefined;
    return new Date(now.getFullYear(), now.getMonth(), now.getDate(), h, m, s).getTime();
  }
  const iso = ISO_RE.exec(t);
  if (!iso) return undefined;
  // A date alone would be UTC midnight for Date.parse; here it is local midnight, like the rest.
  const text2 = `${iso[1]}T${iso[2] ?? '00:00'}${iso[3] ?? ''}`;
  const ms = Date.parse(text2);
  return Number.isNaN(ms) ? undefined : ms;
}

/** "2026-12-01 10:32:05" in local time. */
export function formatLocal(ms: number): string {
  const d = new Date(ms);
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/** The local timezone, e.g. "Europe/Berlin (UTC+01:00)". */
export function timezoneLabel(at = new Date()): string {
  const name = Intl.DateTimeFormat().resolvedOptions().timeZone || 'local';
  const off = -at.getTimezoneOffset();
  const sign = off >= 0 ? '+' : '-';
  const abs = Math.abs(off);
  return `${name} (UTC${sign}${String(Math.floor(abs / 60)).padStart(2, '0')}:${String(abs % 60).padStart(2, '0')})`;
}
