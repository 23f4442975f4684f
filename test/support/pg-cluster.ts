/**
 * A throwaway PostgreSQL cluster for tests and benchmarks: initdb in a temporary directory, a free
 * port on 127.0.0.1, SCRAM-SHA-256 on TCP, fsync off. Works as root (the server then runs as the
 * `postgres` OS user, since initdb refuses root) and as an ordinary user.
 *
 * Roles made for authentication tests, each with the method pg_hba gives it:
 *   postgres / postgres   superuser, scram-sha-256
 *   app / app             ordinary role, scram-sha-256, owns database `app`
 *   md5user / md5pass     md5
 *   plainuser / plainpass password (cleartext)
 *   trustuser             trust
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export interface PgServer {
  host: string;
  port: number;
  /** superuser credentials */
  user: string;
  password: string;
  database: string;
  /** postgres://user:password@host:port/database */
  url: string;
  /** directory of the server binaries (psql, pgbench live there or on PATH) */
  bindir: string;
}

export interface RunningCluster extends PgServer {
  dataDir: string;
  stop(): Promise<void>;
  /** Stop the server but keep its data directory (for restart tests). */
  pause(): Promise<void>;
  resume(): Promise<void>;
}

export function findPgBindir(): string {
  const candidates: string[] = [];
  if (process.env.PG_BINDIR) candidates.push(process.env.PG_BINDIR);
  try {
    candidates.push(execFileSync('pg_config', ['--bindir'], { encoding: 'utf8' }).trim());
  } catch {
    /* pg_config missing: fall through to the Debian layout */
  }
  try {
    const versions = fs
      .readdirSync('/usr/lib/postgresql')
      .filter((v) => /^\d+$/.test(v))
      .sort((a, b) => Number(b) - Number(a));
    for (const v of versions) candidates.push(`/usr/lib/postgresql/${v}/bin`);
  } catch {
    /* not Debian */
  }
  for (const dir of candidates) {
    if (fs.existsSync(path.join(dir, 'initdb')) && fs.existsSync(path.join(dir, 'postgres'))) return dir;
  }
  throw new Error(
    'PostgreSQL server binaries not found (initdb, postgres). Install them (Debian: apt-get install postgresql) ' +
      'or set PG_BINDIR, or point DBGUARD_TEST_PGURL at an existing server.',
  );
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

function runAs(bin: string, args: string[], input?: string): void {
  const opts = { stdio: 'pipe' as const, ...(input !== undefined ? { input } : {}) };
  if (isRoot) execFileSync('runuser', ['-u', 'postgres', '--', bin, ...args], opts);
  else execFileSync(bin, args, opts);
}

/** Thrown when the postmaster could not bind its port (another process took it after freePort()). */
class PortTaken extends Error {}

/**
 * Waits until THIS postmaster is ready: its postmaster.pid names our port and says `ready` (what
 * `pg_ctl -w` reads), so another process listening on the port is never taken for it.
 */
async function waitForPostmaster(
  dataDir: string,
  port: number,
  child: ChildProcess,
  logFile: string,
  timeoutMs = 30_000,
) {
  const deadline = Date.now() + timeoutMs;
  const pidFile = path.join(dataDir, 'postmaster.pid');
  while (Date.now() < deadline) {
    if (child.exitCode !== null) {
      const log = safeRead(logFile);
      if (/could not bind|Address already in use/i.test(log)) throw new PortTaken(log);
      throw new Error(`postgres exited with ${child.exitCode}:\n${log}`);
    }
    let lines: string[] = [];
    try {
      lines = fs.readFileSync(pidFile, 'utf8').split('\n');
    } catch {
      /* not written yet */
    }
    if (lines[3]?.trim() === String(port) && lines[7]?.trim() === 'ready') return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`postgres did not start within ${timeoutMs} ms:\n${safeRead(logFile)}`);
}

function safeRead(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8').slice(-4000);
  } catch {
    return '(no log)';
  }
}

export interface StartOptions {
  /** extra postgresql.conf settings */
  settings?: Record<string, string | number>;
  /** extra SQL run as superuser after start */
  setupSql?: string;
  /** pg_hba.conf lines placed before the default ones (the first line that matches decides) */
  hbaFirst?: string[];
}

export async function startCluster(opts: StartOptions = {}): Promise<RunningCluster> {
  const bindir = findPgBindir();
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'dbguard-pg-'));
  const dataDir = path.join(base, 'data');
  const sockDir = path.join(base, 'sock');
  fs.mkdirSync(sockDir);
  const pwFile = path.join(base, 'pw');
  fs.writeFileSync(pwFile, 'postgres\n');
  if (isRoot) {
    execFileSync('chown', ['-R', 'postgres:postgres', base]);
    fs.chmodSync(base, 0o755);
  }
  runAs(path.join(bindir, 'initdb'), [
    '-D',
    dataDir,
    '-U',
    'postgres',
    '--pwfile',
    pwFile,
    '--auth-local=trust',
    '--auth-host=scram-sha-256',
    '-E',
    'UTF8',
    '--locale=C',
    '--no-sync',
  ]);
  const hba = [
    ...(opts.hbaFirst ?? []),
    'local all all trust',
    'host all md5user 127.0.0.1/32 md5',
    'host all plainuser 127.0.0.1/32 password',
    'host all trustuser 127.0.0.1/32 trust',
    'host all all 127.0.0.1/32 scram-sha-256',
    'host all all ::1/128 scram-sha-256',
  ].join('\n');
  fs.writeFileSync(path.join(dataDir, 'pg_hba.conf'), `${hba}\n`);
  let port = await freePort();
  const settings: Record<string, string | number> = {
    port,
    listen_addresses: "'127.0.0.1'",
    unix_socket_directories: `'${sockDir}'`,
    fsync: 'off',
    synchronous_commit: 'off',
    full_page_writes: 'off',
    max_connections: 600,
    shared_buffers: "'256MB'",
    password_encryption: "'scram-sha-256'",
    log_min_messages: 'warning',
    ...opts.settings,
  };
  fs.appendFileSync(
    path.join(dataDir, 'postgresql.conf'),
    Object.entries(settings)
      .map(([k, v]) => `${k} = ${v}`)
      .join('\n') + '\n',
  );
  if (isRoot) execFileSync('chown', ['-R', 'postgres:postgres', dataDir]);
  const logFile = path.join(base, 'server.log');
  fs.writeFileSync(logFile, '');
  if (isRoot) execFileSync('chown', ['postgres:postgres', logFile]);

  let child: ChildProcess;
  const launch = async () => {
    const logFd = fs.openSync(logFile, 'a');
    const cmd = isRoot ? 'runuser' : path.join(bindir, 'postgres');
    const args = isRoot
      ? ['-u', 'postgres', '--', path.join(bindir, 'postgres'), '-D', dataDir]
      : ['-D', dataDir];
    child = spawn(cmd, args, { stdio: ['ignore', logFd, logFd], detached: false });
    fs.closeSync(logFd);
    await waitForPostmaster(dataDir, port, child, logFile);
  };
  const shutdown = async () => {
    if (!child) return;
    // pg_ctl waits until the postmaster is gone (runuser may exit before it); SIGKILL only as a last resort.
    try {
      runAs(path.join(bindir, 'pg_ctl'), ['stop', '-D', dataDir, '-m', 'fast', '-w', '-t', '30']);
    } catch {
      /* not running, or did not stop in time */
    }
    if (child.exitCode === null) {
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      child.kill('SIGKILL');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 2000))]);
    }
  };
  // freePort() closes its probe before the postmaster binds: if another process took the port in
  // between, start again on another one (the last `port =` line of postgresql.conf wins).
  for (let attempt = 1; ; attempt++) {
    try {
      await launch();
      break;
    } catch (err) {
      if (!(err instanceof PortTaken) || attempt >= 5) throw err;
      port = await freePort();
      fs.appendFileSync(path.join(dataDir, 'postgresql.conf'), `port = ${port}\n`);
    }
  }

  const psqlBin = fs.existsSync(path.join(bindir, 'psql')) ? path.join(bindir, 'psql') : 'psql';
  const setup = `
    SET password_encryption = 'scram-sha-256';
    CREATE ROLE app LOGIN PASSWORD 'app';
    CREATE DATABASE app OWNER app;
    SET password_encryption = 'md5';
    CREATE ROLE md5user LOGIN PASSWORD 'md5pass';
    SET password_encryption = 'scram-sha-256';
    CREATE ROLE plainuser LOGIN PASSWORD 'plainpass';
    CREATE ROLE trustuser LOGIN;
    GRANT ALL ON DATABASE app TO md5user, plainuser, trustuser;
    ${opts.setupSql ?? ''}
  `;
  // The port accepts connections before the server takes them ("the database system is starting up",
  // 57P03, on a loaded machine): retry the connection, never a setup that has begun (nothing runs
  // before the login succeeds).
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      runSetup();
      break;
    } catch (err) {
      const stderr = (err as { stderr?: Buffer }).stderr?.toString() ?? '';
      if (!/the database system is starting up/.test(stderr) || Date.now() > deadline) {
        await shutdown();
        throw new Error(`cluster setup SQL failed: ${stderr || String(err)}`);
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  function runSetup(): void {
    runAs(
      psqlBin,
      [
        '-X',
        '-q',
        '-v',
        'ON_ERROR_STOP=1',
        '-h',
        sockDir,
        '-p',
        String(port),
        '-U',
        'postgres',
        '-d',
        'postgres',
        '-f',
        '-',
      ],
      setup,
    );
  }

  return {
    host: '127.0.0.1',
    port,
    user: 'postgres',
    password: 'postgres',
    database: 'postgres',
    url: `postgres://postgres:postgres@127.0.0.1:${port}/postgres`,
    bindir,
    dataDir,
    pause: shutdown,
    resume: launch,
    stop: async () => {
      await shutdown();
      fs.rmSync(base, { recursive: true, force: true });
    },
  };
}

/** Parse DBGUARD_TEST_PGURL (an existing server the tests may use instead of starting one). */
export function serverFromUrl(url: string): PgServer {
  const u = new URL(url);
  return {
    host: u.hostname,
    port: Number(u.port || 5432),
    user: decodeURIComponent(u.username || 'postgres'),
    password: decodeURIComponent(u.password || ''),
    database: u.pathname.replace(/^\//, '') || 'postgres',
    url,
    bindir: (() => {
      try {
        return findPgBindir();
      } catch {
        return '/usr/bin';
      }
    })(),
  };
}
