/**
 * Operational log: one JSON object per line on stderr. Never given passwords, statement text or
 * parameters: callers log events (listen, connection errors, protocol violations), not data.
 */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

export interface Logger {
  log(level: LogLevel, msg: string, fields?: Record<string, unknown>): void;
}

let stderrBroken = false;
let stderrGuarded = false;

/**
 * process.stderr, or nothing once it broke. A write to a closed pipe (`dbguard proxy 2>&1 | head`)
 * emits 'error' on process.stderr; unhandled, that is an uncaught exception, whose handler logs it,
 * which fails again: a loop that starved the event loop (no new connections, signals unanswered).
 */
function writeStderr(line: string): void {
  if (!stderrGuarded) {
    stderrGuarded = true;
    process.stderr.on('error', () => {
      stderrBroken = true;
    });
  }
  if (stderrBroken || process.stderr.destroyed) return;
  try {
    process.stderr.write(line);
  } catch {
    stderrBroken = true;
  }
}

export function jsonLogger(write: (line: string) => void = writeStderr, minLevel: LogLevel = 'info'): Logger {
  const order: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };
  return {
    log(level, msg, fields) {
      if (order[level] < order[minLevel]) return;
      write(`${JSON.stringify({ time: new Date().toISOString(), level, msg, ...fields })}\n`);
    },
  };
}

export const silentLogger: Logger = { log() {} };
