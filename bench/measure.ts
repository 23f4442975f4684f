/**
 * The measurements beyond pgbench: a large masked SELECT through the proxy against the same query
 * direct, and the memory each idle connection costs a proxy process.
 */

import { rssOf, sampleRss } from './procs.js';
import { median } from './stats.js';
import { WireClient, type WireLogin } from './wire-client.js';

export interface SelectVariant {
  label: string;
  login: WireLogin;
  /** sample this process's RSS while the query runs */
  pid?: number;
  /** another text than the common one (the masked rewrite run directly) */
  sql?: string;
}

export interface SelectResult {
  label: string;
  rows: number;
  bytes: number;
  /** median over rounds */
  ms: number;
  rowsPerSec: number;
  mbPerSec: number;
  /** largest VmRSS of `pid` seen while the query ran (max over rounds) */
  peakRss?: number;
  /** VmRSS of `pid` before the first query */
  rssBefore?: number;
  /** CPU ms the proxy process used for one query (median) */
  proxyCpuMs?: number;
}

export async function bigSelect(
  variants: SelectVariant[],
  sql: string,
  rounds: number,
  progress: (line: string) => void,
  cpuMsOf?: (pid: number) => number,
): Promise<SelectResult[]> {
  const times = new Map<string, number[]>(variants.map((v) => [v.label, []]));
  const cpu = new Map<string, number[]>(variants.map((v) => [v.label, []]));
  const peaks = new Map<string, number>();
  const before = new Map<string, number>();
  const sizes = new Map<string, { rows: number; bytes: number }>();
  for (let r = 0; r < rounds; r++) {
    // rotate the order each round so drift on a shared machine does not favour one variant
    for (let k = 0; k < variants.length; k++) {
      const v = variants[(k + r) % variants.length]!;
      const c = await WireClient.connect(v.login);
      try {
        if (v.pid && !before.has(v.label)) before.set(v.label, rssOf(v.pid));
        const sampler = v.pid ? sampleRss(v.pid) : undefined;
        const cpu0 = v.pid && cpuMsOf ? cpuMsOf(v.pid) : 0;
        const res = await c.query(v.sql ?? sql);
        if (v.pid && cpuMsOf) cpu.get(v.label)!.push(cpuMsOf(v.pid) - cpu0);
        const peak = sampler?.stop();
        if (peak !== undefined) peaks.set(v.label, Math.max(peaks.get(v.label) ?? 0, peak));
        times.get(v.label)!.push(res.ms);
        sizes.set(v.label, { rows: res.rows, bytes: res.bytes });
        progress(
          `  round ${r + 1}/${rounds} ${v.label}: ${res.rows} rows, ${(res.bytes / 1048576).toFixed(0)} MiB in ${res.ms.toFixed(0)} ms`,
        );
      } finally {
        c.close();
      }
    }
  }
  return variants.map((v) => {
    const ms = median(times.get(v.label)!);
    const { rows, bytes } = sizes.get(v.label)!;
    const out: SelectResult = {
      label: v.label,
      rows,
      bytes,
      ms,
      rowsPerSec: rows / (ms / 1000),
      mbPerSec: bytes / 1048576 / (ms / 1000),
    };
    if (peaks.has(v.label)) out.peakRss = peaks.get(v.label)!;
    if (before.has(v.label)) out.rssBefore = before.get(v.label)!;
    if (cpu.get(v.label)!.length) out.proxyCpuMs = median(cpu.get(v.label)!);
    return out;
  });
}

export interface IdleResult {
  label: string;
  connections: number;
  rssBefore: number;
  rssAfter: number;
  perConnection: number;
  openMs: number;
  error?: string;
}

/** Opens `n` connections (logged in, then idle), reads the process's RSS, closes them. */
export async function idleConnections(
  label: string,
  pid: number,
  login: WireLogin,
  n: number,
  progress: (line: string) => void,
): Promise<IdleResult> {
  const clients: WireClient[] = [];
  const rssBefore = rssOf(pid);
  const t0 = performance.now();
  let error: string | undefined;
  try {
    let next = 0;
    const worker = async () => {
      while (next < n) {
        next++;
        clients.push(await WireClient.connect(login, 60_000));
        if (clients.length % 500 === 0) progress(`  ${label}: ${clients.length}/${n} connections open`);
      }
    };
    await Promise.all(Array.from({ length: 16 }, worker));
  } catch (err) {
    error = (err as Error).message;
  }
  const openMs = performance.now() - t0;
  await new Promise((r) => setTimeout(r, 1500)); // let the process settle (timers, buffers)
  const rssAfter = rssOf(pid);
  for (const c of clients) c.close();
  const out: IdleResult = {
    label,
    connections: clients.length,
    rssBefore,
    rssAfter,
    perConnection: clients.length ? (rssAfter - rssBefore) / clients.length : Number.NaN,
    openMs,
  };
  if (error) out.error = error;
  return out;
}
