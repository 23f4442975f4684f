/**
 * The proxy a soak drives, either as its own process (the built `dbguard proxy` CLI with a policy
 * file, an audit file and a metrics endpoint, as deployed) or inside the soak's process
 * (startGovernedProxy). Own process is the default: its RSS and descriptors are the proxy's alone,
 * not mixed with 500 clients' buffers and sockets.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from '../../test/support/pg-cluster.js';
import { proxyArgs } from '../env.js';
import { rssOf, startService } from '../procs.js';
import {
  compilePolicy,
  countAuditEvents,
  fdTargets,
  memoryLogger,
  openFds,
  reliabilityPolicyYaml,
  rssMb,
  startGovernedProxy,
} from './support.js';

export type ProxyMode = 'process' | 'in-process';

export interface SoakTarget {
  mode: ProxyMode;
  port: number;
  /** the process whose RSS and descriptors are measured (this one for in-process) */
  pid: number | 'self';
  rssMb(): number;
  fds(): number;
  fdTargets(): Map<string, string>;
  /** client sessions the proxy holds now */
  activeSessions(): Promise<number>;
  /** lines the proxy logged at level error so far */
  errorLines(): string[];
  /** stops the proxy (process: SIGTERM, which flushes and closes the audit trail) */
  stop(): Promise<void>;
  /** audit events by type; call after stop() */
  auditCounts(): Promise<Map<string, number>>;
  /** removes the policy and audit files (the audit file of a long run is hundreds of MB) */
  removeFiles(): void;
}

/** dist/cli/main.js, from the compiled bench (dist/bench/reliability) or from the sources (vitest). */
export function builtCli(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const candidates = [path.resolve(here, '../../cli/main.js'), path.resolve(here, '../../dist/cli/main.js')];
  const found = candidates.find((c) => fs.existsSync(c));
  if (!found) throw new Error(`dbguard CLI not built (${candidates[1]}): run \`npm run build\` first`);
  return found;
}

export async function startSoakTarget(opts: {
  mode: ProxyMode;
  schema: string;
  upstream: { host: string; port: number };
}): Promise<SoakTarget> {
  const yaml = reliabilityPolicyYaml({ schema: opts.schema, upstreamPort: opts.upstream.port });
  if (opts.mode === 'in-process') {
    const log = memoryLogger();
    const gp = await startGovernedProxy({
      policy: compilePolicy(yaml),
      upstream: { ...opts.upstream, sslmode: 'disable' },
      logger: log,
    });
    let stopped = false;
    return {
      mode: 'in-process',
      port: gp.proxy.port,
      pid: 'self',
      rssMb,
      fds: () => openFds(),
      fdTargets: () => fdTargets(),
      activeSessions: async () => gp.proxy.activeSessions,
      errorLines: () => log.lines.filter((l) => l.level === 'error').map((l) => JSON.stringify(l)),
      async stop() {
        if (stopped) return;
        stopped = true;
        await gp.close();
      },
      auditCounts: () => countAuditEvents(gp.auditFile),
      removeFiles: () => fs.rmSync(path.dirname(gp.auditFile), { recursive: true, force: true }),
    };
  }

  const cli = builtCli();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dbguard-soak-'));
  const policyFile = path.join(dir, 'policy.yaml');
  const auditFile = path.join(dir, 'audit.jsonl');
  fs.writeFileSync(policyFile, yaml);
  const port = await freePort();
  const metricsPort = await freePort();
  const errors: string[] = [];
  let partial = '';
  const onOutput = (chunk: string) => {
    const lines = (partial + chunk).split('\n');
    partial = lines.pop()!;
    for (const l of lines) if (l.includes('"level":"error"')) errors.push(l);
  };
  const svc = await startService(
    'dbguard proxy',
    process.execPath,
    [
      ...proxyArgs({ cli, port, upstream: opts.upstream, policyFile, auditFile }),
      '--metrics-listen',
      `127.0.0.1:${metricsPort}`,
    ],
    port,
    { onOutput },
  );
  const pid = svc.pid;
  let stopped = false;
  return {
    mode: 'process',
    port,
    pid,
    rssMb: () => rssOf(pid) / (1024 * 1024),
    fds: () => openFds(pid),
    fdTargets: () => fdTargets(pid),
    async activeSessions() {
      const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
      const m = /^dbguard_connections_active\s+(\d+)/m.exec(text);
      if (!m) throw new Error('dbguard_connections_active missing from /metrics');
      return Number(m[1]);
    },
    errorLines: () => errors,
    async stop() {
      if (stopped) return;
      stopped = true;
      await svc.stop();
    },
    auditCounts: () => countAuditEvents(auditFile),
    removeFiles: () => fs.rmSync(dir, { recursive: true, force: true }),
  };
}
