/**
 * Child processes the benchmark starts (pgbouncer, the dbguard proxy, the bare Node pipe): spawn,
 * wait until the port answers, read the memory the kernel charges them, stop them by their pid.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';

export interface Service {
  name: string;
  host: string;
  port: number;
  pid: number;
  /** the last lines the process wrote (for error messages) */
  output(): string;
  stop(): Promise<void>;
}

export function portAnswers(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, host);
    s.setTimeout(1000, () => {
      s.destroy();
      resolve(false);
    });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** Starts `cmd args` and resolves once `port` accepts connections; the process is killed on failure. */
export async function startService(
  name: string,
  cmd: string,
  args: string[],
  port: number,
  opts: {
    env?: NodeJS.ProcessEnv;
    timeoutMs?: number;
    /** every chunk the process writes (stdout and stderr), for callers that need more than the tail */
    onOutput?: (chunk: string) => void;
  } = {},
): Promise<Service> {
  const child: ChildProcess = spawn(cmd, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: opts.env ?? process.env,
  });
  let out = '';
  const keep = (d: Buffer) => {
    out = (out + d.toString()).slice(-4000);
    opts.onOutput?.(d.toString());
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const t = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(t);
  };
  const deadline = Date.now() + (opts.timeoutMs ?? 30_000);
  while (!(await portAnswers(port))) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`${name} exited (${child.exitCode ?? child.signalCode}) before listening:\n${out}`);
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`${name} did not listen on ${port} in time:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { name, host: '127.0.0.1', port, pid: child.pid!, output: () => out, stop };
}

/** Resident set size of a process, in bytes (VmRSS), or the peak so far (VmHWM). */
export function rssOf(pid: number, field: 'VmRSS' | 'VmHWM' = 'VmRSS'): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status);
  if (!m) throw new Error(`no ${field} for pid ${pid}`);
  return Number(m[1]) * 1024;
}

/** Samples VmRSS every `everyMs` until stopped; returns the largest value seen. */
export function sampleRss(pid: number, everyMs = 20): { stop(): number } {
  let peak = rssOf(pid);
  const t = setInterval(() => {
    try {
      peak = Math.max(peak, rssOf(pid));
    } catch {
      /* the process ended; keep the last peak */
    }
  }, everyMs);
  return {
    stop() {
      clearInterval(t);
      try {
        peak = Math.max(peak, rssOf(pid));
      } catch {
        /* ended */
      }
      return peak;
    },
  };
}

/** CPU time (user + system) a process has used, in milliseconds, from /proc/PID/stat. */
export function cpuMsOf(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]); // utime, stime
  return (ticks * 1000) / 100; // USER_HZ is 100 on Linux
}
