/**
 * `dbguard proxy --audit-key-file` (DBGUARD_AUDIT_KEY_FILE) on the built CLI: the audit trail it writes
 * is keyed, `dbguard audit verify --key-file` says so, and a key file that is too short stops the
 * proxy at start with a line naming the flag.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { until } from '../support/until.js';

const CLI = path.resolve('dist/cli/main.js');
const run = promisify(execFile);

describe('dbguard proxy --audit-key-file', () => {
  const server = inject('pg');
  let dir: string;
  let proc: ChildProcess | undefined;
  const policy = () => path.join(dir, 'policy.yaml');
  const audit = () => path.join(dir, 'audit.jsonl');
  const key = () => path.join(dir, 'audit.key');

  beforeAll(() => {
    if (!fs.existsSync(CLI)) throw new Error('run `npm run build` first: the test drives the built CLI');
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dbguard-auditkey-'));
    fs.writeFileSync(
      policy(),
      `apiVersion: dbguard.io/v1alpha1
kind: DatabasePolicy
metadata: {name: k, namespace: t}
spec:
  upstream: {host: 127.0.0.1, port: ${server.port}, sslmode: disable}
  defaultAction: Allow
  audit: {statements: All}
`,
    );
    fs.writeFileSync(key(), `${'5e'.repeat(32)}\n`);
  });
  afterAll(async () => {
    if (proc && proc.exitCode === null) {
      proc.kill('SIGTERM');
      await new Promise((r) => proc!.once('exit', r));
    }
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('writes a keyed chain that verifies with the key (taken from the environment)', async () => {
    let log = '';
    proc = spawn(
      process.execPath,
      [CLI, 'proxy', '--listen', '127.0.0.1:0', '--policy-file', policy(), '--audit-log', audit()],
      { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, DBGUARD_AUDIT_KEY_FILE: key() } },
    );
    proc.stderr!.on('data', (d) => {
      log += d;
    });
    const listen = await until(
      'proxy listening',
      () =>
        log
          .split('\n')
          .filter((l) => l.startsWith('{'))
          .map((l) => JSON.parse(l) as { msg: string; listen?: string })
          .find((l) => l.msg === 'listening')?.listen,
    );
    const c = new pg.Client({
      host: '127.0.0.1',
      port: Number(listen.split(':').at(-1)),
      user: 'app',
      password: 'app',
      database: 'app',
    });
    await c.connect();
    await c.query('SELECT 1');
    await c.end();
    proc.kill('SIGTERM');
    await new Promise((r) => proc!.once('exit', r));
    const lines = fs.readFileSync(audit(), 'utf8').trim().split('\n');
    expect(lines.length).toBeGreaterThanOrEqual(3);
    for (const l of lines)
      expect(JSON.parse(l)).toMatchObject({ chain: 'hmac-sha256', keyId: expect.any(String) });
    const ok = await run(process.execPath, [CLI, 'audit', 'verify', '--key-file', key(), audit()]);
    expect(ok.stdout).toMatch(/; keyed chain \(HMAC-SHA256, key [0-9a-f]{16}\)/);
  });

  it('refuses to start with a key file that is too short', async () => {
    const short = path.join(dir, 'short.key');
    fs.writeFileSync(short, 'tiny');
    const r = await run(process.execPath, [
      CLI,
      'proxy',
      '--listen',
      '127.0.0.1:0',
      '--policy-file',
      policy(),
      '--audit-key-file',
      short,
    ]).catch((e: { code: number; stderr: string }) => e);
    expect(r).toMatchObject({ code: 1 });
    expect((r as { stderr: string }).stderr).toMatch(
      /--audit-key-file .*short\.key: audit key too short: 4 bytes/,
    );
  });
});
