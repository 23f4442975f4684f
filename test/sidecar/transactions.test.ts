/**
 * Transactions through a policy-enforcing proxy: a denied statement aborts the transaction it is in
 * like any PostgreSQL error, also right after a COPY FROM STDIN (so the copied rows never commit), and
 * a policy change while a transaction is open applies to its next statement without ending it.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { type Sidecar, startSidecar } from '../../sidecar/runtime.js';
import { adminQuery } from '../support/admin.js';
import { until } from '../support/until.js';

function policyText(port: number, masked: boolean): string {
  const policy = `
apiVersion: dbguard.io/v1alpha1
kind: DatabasePolicy
metadata: {name: tx, namespace: shop}
spec:
  upstream: {host: 127.0.0.1, port: ${port}, sslmode: disable}
  defaultAction: Allow
  rules:
    - name: no-drop
      action: Deny
      match: {commands: ["DROP *"]}
      message: "No drops here."
`;
  const masking = `---
apiVersion: dbguard.io/v1alpha1
kind: MaskingRule
metadata: {name: pii, namespace: shop}
spec:
  policyRef: {name: tx}
  columns: [{table: tx_people, column: ssn, strategy: Redact}]
`;
  return masked ? policy + masking : policy;
}

describe('transactions through an enforcing proxy', () => {
  const server = inject('pg');
  let dir: string;
  let sidecar: Sidecar;
  const file = () => path.join(dir, 'policy.yaml');
  const url = () => `postgres://app:app@${sidecar.proxy.host}:${sidecar.proxy.port}/app`;

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dbguard-tx-'));
    fs.writeFileSync(file(), policyText(server.port, false));
    await adminQuery(
      server,
      `DROP TABLE IF EXISTS tx_copy, tx_people;
       CREATE TABLE tx_copy (id int, label text); GRANT ALL ON tx_copy TO app;
       CREATE TABLE tx_people (id int, ssn text); GRANT ALL ON tx_people TO app;
       INSERT INTO tx_people VALUES (1, '111-22-3333');`,
    );
    sidecar = await startSidecar({
      listen: { host: '127.0.0.1', port: 0 },
      upstream: { host: server.host, port: server.port, sslmode: 'disable' },
      policyFiles: [file()],
      reloadIntervalMs: 100,
      logger: { log: () => {} },
    });
  });

  afterAll(async () => {
    await sidecar?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a denied statement after COPY FROM STDIN in the same transaction aborts it: no copied row commits', async () => {
    // psql without ON_ERROR_STOP goes on after the denial, as a script would; its COMMIT then rolls back
    const script = [
      'BEGIN;',
      'COPY tx_copy FROM STDIN;',
      '1\tone',
      '2\ttwo',
      '\\.',
      'DROP TABLE tx_people;',
      'SELECT count(*) AS in_tx FROM tx_copy;',
      'COMMIT;',
      'SELECT count(*) AS after FROM tx_copy;',
    ].join('\n');
    const run = promisify(execFile)('psql', ['-X', '-q', '-At', '-f', '-', url()]);
    run.child.stdin!.end(`${script}\n`);
    const { stdout, stderr } = await run;
    expect(stderr).toContain('dbguard: No drops here. (rule no-drop)');
    // the statement after the denial is refused by the server: the transaction is aborted
    expect(stderr).toContain('current transaction is aborted');
    // COMMIT of the aborted transaction rolls back; the copied rows are gone
    expect(stdout.trim().split('\n').at(-1)).toBe('0');
    expect((await adminQuery(server, 'SELECT count(*)::int AS n FROM tx_copy', 'app')).rows[0].n).toBe(0);
    expect((await adminQuery(server, 'SELECT count(*)::int AS n FROM tx_people', 'app')).rows[0].n).toBe(1);
  });

  it('a policy change while a transaction is open applies to its next statement; the transaction goes on', async () => {
    const c = new pg.Client(url());
    await c.connect();
    try {
      await c.query('BEGIN');
      await c.query(`INSERT INTO tx_copy VALUES (10, 'kept')`);
      expect((await c.query('SELECT ssn FROM tx_people WHERE id = 1')).rows[0].ssn).toBe('111-22-3333');
      const before = sidecar.policy()!.version;
      fs.writeFileSync(file(), policyText(server.port, true));
      await until('new policy', () => sidecar.policy()!.version !== before);
      // the same transaction, the new policy: masked
      expect((await c.query('SELECT ssn FROM tx_people WHERE id = 1')).rows[0].ssn).toBe('****');
      await c.query('COMMIT');
      // what the transaction wrote before the change committed
      const kept = await adminQuery(
        server,
        `SELECT count(*)::int AS n FROM tx_copy WHERE label = 'kept'`,
        'app',
      );
      expect(kept.rows[0].n).toBe(1);
    } finally {
      await c.end();
      fs.writeFileSync(file(), policyText(server.port, false));
    }
  });
});
