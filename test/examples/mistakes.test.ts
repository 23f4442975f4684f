/**
 * Every command with the mistakes users make: missing and unreadable files, bad YAML, bad flags, an
 * upstream that refuses the connection, a wrong or missing password, a host:port given where a URL
 * belongs. Each must end (no hang) with a non-zero exit and a message, never a stack trace; the
 * upstream mistakes of `dbguard check` in one line that names the URL without its password and says
 * what to try.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { CLI, ROOT } from '../chart/paths.js';
import { freePort } from '../support/pg-cluster.js';

const server = inject('pg');
const KUBECTL_PLUGIN = path.join(ROOT, 'dist/cli/kubectl-dbguard.js');
let tmp: string;
let policy: string;
let badYaml: string;
let closedPort: number;

beforeAll(async () => {
  if (!fs.existsSync(CLI)) throw new Error('run `npm run build` first: the test drives the built CLI');
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dbguard-mistakes-'));
  policy = path.join(tmp, 'policy.yaml');
  fs.writeFileSync(
    policy,
    `apiVersion: dbguard.io/v1alpha1
kind: DatabasePolicy
metadata: {name: shop, namespace: demo}
spec:
  upstream: {host: ${server.host}, port: ${server.port}}
`,
  );
  badYaml = path.join(tmp, 'bad.yaml');
  fs.writeFileSync(badYaml, 'kind: [\n');
  closedPort = await freePort(); // nothing listens there
});

afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

interface Ran {
  code: number | null;
  stderr: string;
  stdout: string;
  timedOut: boolean;
}

/** Runs a built script with a clean environment (no PGPASSWORD, no kubeconfig); ends it after 20 s. */
function runScript(script: string, args: string[], env: Record<string, string> = {}): Promise<Ran> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [script, ...args], {
      cwd: tmp,
      env: { PATH: process.env.PATH ?? '', HOME: tmp, KUBECONFIG: path.join(tmp, 'no-kubeconfig'), ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, 20_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stderr, stdout, timedOut });
    });
  });
}

const STACK_LINE = /^\s+at .+(:\d+:\d+\)?|\(<anonymous>\)|\(native\))$/m;

/** The common promise: it ends, fails, says something, and shows no stack trace. */
function expectTold(r: Ran, what: string): void {
  expect(r.timedOut, `${what}: still running after 20 s`).toBe(false);
  expect(r.code, `${what}: exit code`).not.toBe(0);
  const out = r.stderr + r.stdout;
  expect(r.stderr.trim(), `${what}: says nothing on stderr`).not.toBe('');
  expect(out, `${what}: prints a stack trace`).not.toMatch(STACK_LINE);
  expect(out, `${what}: prints a raw Error`).not.toMatch(/^(dbguard[^:]*: )?(Type)?Error: /m);
}

const url = (user: string, password: string | null, port: number, db = 'app') =>
  `postgres://${user}${password !== null ? `:${password}` : ''}@127.0.0.1:${port}/${db}`;

describe('no stack trace for a user mistake, from any command', () => {
  const cases: [string, string[], Record<string, string>?][] = [
    ['dbguard', []],
    ['dbguard', ['bogus']],
    ['check', []],
    ['check', ['--policy-file', 'missing.yaml', 'SELECT 1']],
    ['check', ['--policy-file', 'bad.yaml', 'SELECT 1']],
    ['check', ['--policy-file', 'policy.yaml']],
    ['check', ['--policy-file', 'policy.yaml', '--as', 'nobody', 'SELECT 1']],
    ['check', ['--policy-file', 'policy.yaml', '--bogus', 'SELECT 1']],
    ['proxy', []],
    ['proxy', ['--policy-file', 'missing.yaml']],
    ['proxy', ['--policy-file', 'bad.yaml']],
    ['proxy', ['--policy-file', 'policy.yaml', '--upstream', '127.0.0.1:5']],
    ['proxy', ['--policy-file', 'policy.yaml', '--listen', 'nonsense']],
    ['proxy', ['--policy-file', 'policy.yaml', '--metrics-listen', 'nonsense']],
    ['proxy', ['--policy-file', 'policy.yaml', '--upstream-sslmode', 'bogus']],
    ['proxy', ['--policy-file', 'policy.yaml', '--tls-cert', 'missing.pem', '--tls-key', 'missing.pem']],
    ['proxy', ['--policy-file', 'policy.yaml', '--audit-log', '/nonexistent-dir/audit.log']],
    ['proxy', ['--policy-file', 'policy.yaml', '--shutdown-timeout', 'soon']],
    ['operator', ['--bogus']],
    ['operator', ['--kubeconfig', 'missing-kubeconfig']],
    ['inject', []],
    ['inject', ['-f', 'missing.yaml']],
    ['inject', ['-f', 'bad.yaml']],
    ['crds', ['--bogus']],
    ['audit', []],
    ['audit', ['bogus']],
    ['audit', ['verify', 'missing.log']],
    ['demo', ['--listen', 'nonsense']],
  ];

  it.each(cases)('dbguard %s %j', async (command, args, env) => {
    const argv = command === 'dbguard' ? args : [command, ...args];
    const r = await runScript(
      CLI,
      argv.map((a) => (a.endsWith('.yaml') && fs.existsSync(path.join(tmp, a)) ? path.join(tmp, a) : a)),
      env,
    );
    expectTold(r, `dbguard ${argv.join(' ')}`);
  });

  it('dbguard proxy on a port already taken ends with one line', async () => {
    const r = await runScript(CLI, [
      'proxy',
      '--policy-file',
      policy,
      '--listen',
      `127.0.0.1:${server.port}`,
      '--audit-log',
      path.join(tmp, 'a.log'),
    ]);
    expectTold(r, 'proxy EADDRINUSE');
    expect(r.stderr).toMatch(/^dbguard proxy: listen EADDRINUSE/m);
  });

  it.each([[['bogus']], [['list']], [['approve', 'x']]])('kubectl dbguard %j', async (args) => {
    const r = await runScript(KUBECTL_PLUGIN, args);
    expectTold(r, `kubectl dbguard ${args.join(' ')}`);
  });
});

describe('dbguard check: upstream mistakes in one line, URL without its password, what to try', () => {
  const check = (upstream: string, env: Record<string, string> = {}) =>
    runScript(CLI, ['check', '--policy-file', policy, '--upstream', upstream, 'SELECT 1'], env);

  const oneLine = (r: Ran, what: string): string => {
    expectTold(r, what);
    const lines = r.stderr.trimEnd().split('\n');
    expect(lines, `${what}: one line`).toHaveLength(1);
    return lines[0]!;
  };

  it('refused connection', async () => {
    const line = oneLine(await check(url('app', 'sekret', closedPort)), 'refused');
    expect(line).toBe(
      `dbguard check: cannot connect to ${url('app', null, closedPort)}: nothing accepts connections at 127.0.0.1:${closedPort} (connection refused); is PostgreSQL running there, and are the host and port in the URL right?`,
    );
  });

  it('wrong password: names the URL without it, suggests PGPASSWORD', async () => {
    const line = oneLine(await check(url('app', 'wrong-sekret', server.port)), 'wrong password');
    expect(line).not.toContain('wrong-sekret');
    expect(line).toMatch(
      new RegExp(
        `^dbguard check: cannot connect to postgres://app@127\\.0\\.0\\.1:${server.port}/app: password authentication failed for user "app"; check the password: in the URL .* or in PGPASSWORD$`,
      ),
    );
  });

  it('no password: says so and how to give one; PGPASSWORD then works', async () => {
    const line = oneLine(await check(url('app', null, server.port)), 'no password');
    expect(line).toMatch(
      /: the server asks for a password and none was given; put it in the URL .* or set PGPASSWORD$/,
    );
    const ok = await check(url('app', null, server.port), { PGPASSWORD: 'app' });
    expect(ok.stderr).toBe('');
    expect(JSON.parse(ok.stdout)).toMatchObject({ decision: 'allow' });
  });

  it('host:port instead of a URL', async () => {
    const r = await check('127.0.0.1:55432');
    expect(oneLine(r, 'host:port')).toBe(
      "dbguard: --upstream: expected a URL like postgres://USER:PASSWORD@HOST:5432/DATABASE (got '127.0.0.1:55432')",
    );
    expect(r.code).toBe(2);
  });

  it('a database that does not exist, a host that does not resolve', async () => {
    expect(oneLine(await check(url('app', 'app', server.port, 'nodb')), 'no database')).toMatch(
      /database "nodb" does not exist; name an existing database in the URL's path$/,
    );
    expect(oneLine(await check('postgres://app:app@no-such-host.invalid:5432/app'), 'unknown host')).toMatch(
      /^dbguard check: cannot connect to postgres:\/\/app@no-such-host\.invalid:5432\/app: host 'no-such-host\.invalid' not found/,
    );
  });
});
