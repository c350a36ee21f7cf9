/**
 * Structured logging with pino. Human-readable (pino-pretty) on a terminal, one
 * JSON object per line when asked (`--log-format json`) or when stderr is not a
 * TTY, so log shippers and `jq` get machine-readable records. Logs go to stderr;
 * stdout is reserved for command output (and --json results).
 *
 * JSON records are written asynchronously (pino's sonic-boom destination with `sync: false`):
 * a gateway admitting hundreds of enclaves per second must not block on a write(2) per line.
 * pino flushes what is buffered when the process exits. Per-handshake detail is logged at
 * debug; the audit trail (admitted, rejected, session-end) stays at info.
 */
import { pino, type Logger } from 'pino';
import pretty from 'pino-pretty';

export type LogFormat = 'auto' | 'json' | 'pretty';
export type { Logger };

export interface LogOptions {
  format?: LogFormat;
  level?: string;
  name?: string;
}

export function createLogger(opts: LogOptions = {}): Logger {
  const format = opts.format ?? 'auto';
  const usePretty = format === 'pretty' || (format === 'auto' && process.stderr.isTTY === true);
  const base = { name: opts.name ?? 'seng', level: opts.level ?? process.env.SENG_LOG_LEVEL ?? 'info' };
  if (usePretty) {
    return pino(base, pretty({ destination: 2, colorize: process.stderr.isTTY === true, sync: true }));
  }
  return pino(
    { ...base, timestamp: pino.stdTimeFunctions.isoTime },
    pino.destination({ fd: 2, sync: false }),
  );
}

/** A logger that discards everything; for library callers and tests that do not care. */
export const silentLogger: Logger = pino({ level: 'silent' });
