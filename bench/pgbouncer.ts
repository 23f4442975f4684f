/**
 * pgbouncer, Debian's package, in session mode in front of the bench server: the reference a
 * governance proxy is compared with. Installed with apt-get when missing (as root); run from its
 * own ini in a temporary directory, as the `postgres` OS user when we are root (pgbouncer refuses
 * to run as root).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { type Service, startService } from './procs.js';

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

function which(bin: string): string | undefined {
  for (const dir of ['/usr/sbin', '/usr/bin', '/usr/local/bin', ...(process.env.PATH ?? '').split(':')]) {
    const p = path.join(dir, bin);
    if (dir && fs.existsSync(p)) return p;
  }
  return undefined;
}

/** The pgbouncer binary, installing Debian's package first when it is missing and we may. */
export function ensurePgbouncer(log: (line: string) => void): string {
  const found = which('pgbouncer');
  if (found) return found;
  if (!isRoot || !which('apt-get')) {
    throw new Error(
      'pgbouncer is not installed: install it (Debian: apt-get install pgbouncer) and run again',
    );
  }
  log('installing pgbouncer (apt-get install -y pgbouncer) ...');
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  try {
    execFileSync('apt-get', ['install', '-y', '--no-install-recommends', 'pgbouncer'], {
      stdio: 'pipe',
      env,
    });
  } catch {
    execFileSync('apt-get', ['update'], { stdio: 'pipe', env });
    execFileSync('apt-get', ['install', '-y', '--no-install-recommends', 'pgbouncer'], {
      stdio: 'pipe',
      env,
    });
  }
  const bin = which('pgbouncer');
  if (!bin) throw new Error('apt-get installed pgbouncer but the binary was not found');
  return bin;
}

export interface PgbouncerOptions {
  bin: string;
  port: number;
  upstreamPort: number;
  /** users clients log in as, with the password pgbouncer uses to log in upstream */
  users: Record<string, string>;
  maxClientConn?: number;
}

/**
 * Session pooling, clients trusted on loopback (the bench measures relaying, not login), server
 * logins with the users' passwords (SCRAM).
 */
export async function startPgbouncer(o: PgbouncerOptions): Promise<Service & { dir: string }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dbguard-bench-pgbouncer-'));
  const userlist = Object.entries(o.users)
    .map(([u, p]) => `"${u}" "${p}"`)
    .join('\n');
  fs.writeFileSync(path.join(dir, 'userlist.txt'), `${userlist}\n`);
  fs.writeFileSync(
    path.join(dir, 'pgbouncer.ini'),
    [
      '[databases]',
      `* = host=127.0.0.1 port=${o.upstreamPort}`,
      '[pgbouncer]',
      'listen_addr = 127.0.0.1',
      `listen_port = ${o.port}`,
      `unix_socket_dir =`,
      'auth_type = trust',
      `auth_file = ${path.join(dir, 'userlist.txt')}`,
      'pool_mode = session',
      `max_client_conn = ${o.maxClientConn ?? 200}`,
      'default_pool_size = 50',
      `logfile = ${path.join(dir, 'pgbouncer.log')}`,
      'log_connections = 0',
      'log_disconnections = 0',
      'ignore_startup_parameters = extra_float_digits,application_name',
      '',
    ].join('\n'),
  );
  if (isRoot) {
    execFileSync('chown', ['-R', 'postgres:postgres', dir]);
  }
  // setpriv execs pgbouncer in place, so the pid we hold is pgbouncer's own (for RSS and stopping).
  const [cmd, args] = isRoot
    ? [
        'setpriv',
        ['--reuid=postgres', '--regid=postgres', '--init-groups', o.bin, path.join(dir, 'pgbouncer.ini')],
      ]
    : [o.bin, [path.join(dir, 'pgbouncer.ini')]];
  const svc = await startService('pgbouncer', cmd as string, args as string[], o.port);
  return {
    ...svc,
    dir,
    stop: async () => {
      await svc.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
