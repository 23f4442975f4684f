/**
 * One `pgbench -S` run against one target: TPS as pgbench reports it (without connection time)
 * and latency percentiles from its per-transaction log (`-l`), which pgbench itself does not print.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { percentile } from './stats.js';

export type PgbenchMode = 'simple' | 'extended' | 'prepared';

export interface PgbenchRun {
  port: number;
  mode: PgbenchMode;
  clients: number;
  seconds: number;
  user: string;
  password: string;
  database: string;
  bindir?: string;
}

export interface PgbenchResult {
  tps: number;
  /** latency percentiles in milliseconds, from every transaction of the run */
  p50: number;
  p99: number;
  transactions: number;
}

export async function runPgbench(r: PgbenchRun): Promise<PgbenchResult> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dbguard-bench-pgbench-'));
  const bin =
    r.bindir && fs.existsSync(path.join(r.bindir, 'pgbench')) ? path.join(r.bindir, 'pgbench') : 'pgbench';
  const args = [
    '-S',
    '-n',
    '-M',
    r.mode,
    '-c',
    String(r.clients),
    '-j',
    String(Math.min(r.clients, 2)),
    '-T',
    String(r.seconds),
    '-l',
    '--log-prefix',
    path.join(dir, 'tx'),
    '-h',
    '127.0.0.1',
    '-p',
    String(r.port),
    '-U',
    r.user,
    r.database,
  ];
  try {
    const stdout = await new Promise<string>((resolve, reject) => {
      execFile(
        bin,
        args,
        { env: { ...process.env, PGPASSWORD: r.password }, timeout: (r.seconds + 60) * 1000, cwd: dir },
        (err, out, errOut) => {
          if (err) reject(new Error(`pgbench failed on port ${r.port}: ${errOut || err.message}`));
          else resolve(out);
        },
      );
    });
    const tps = /tps = ([\d.]+)/.exec(stdout);
    if (!tps) throw new Error(`pgbench printed no tps:\n${stdout}`);
    const latencies: number[] = [];
    for (const f of fs.readdirSync(dir)) {
      if (!f.startsWith('tx')) continue;
      for (const line of fs.readFileSync(path.join(dir, f), 'utf8').split('\n')) {
        // client_id transaction_no time(µs) script_no time_epoch time_us
        const sp1 = line.indexOf(' ');
        const sp2 = line.indexOf(' ', sp1 + 1);
        const sp3 = line.indexOf(' ', sp2 + 1);
        if (sp3 < 0) continue;
        latencies.push(Number(line.slice(sp2 + 1, sp3)) / 1000);
      }
    }
    const failed = /number of failed transactions: (\d+)/.exec(stdout);
    if (failed && Number(failed[1]) > 0) throw new Error(`pgbench had ${failed[1]} failed transactions`);
    latencies.sort((a, b) => a - b);
    return {
      tps: Number(tps[1]),
      p50: percentile(latencies, 0.5),
      p99: percentile(latencies, 0.99),
      transactions: latencies.length,
    };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
