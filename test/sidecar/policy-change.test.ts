/**
 * A policy change applies to the next statement. Statements prepared under the old policy (protocol
 * prepared statements, SQL PREPARE, cursors) are executed later without a new Parse, so a session that
 * holds ones the new policy judges differently is ended (57P01) and its pool reconnects; sessions without
 * them carry on.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { type Sidecar, startSidecar } from '../../sidecar/runtime.js';
import { adminQuery } from '../support/admin.js';
import { until } from '../support/until.js';

function policyText(port: number, masked: boolean): string {
  return `
apiVersion: dbguard.io/v1alpha1
kind: DatabasePolicy
metadata: {name: pc, namespace: shop}
spec:
  upstream: {host: 127.0.0.1, port: ${port}, sslmode: disable}
${
  masked
    ? `---
apiVersion: dbguard.io/v1alpha1
kind: MaskingRule
metadata: {name: pii, namespace: shop}
spec:
  policyRef: {name: pc}
  columns: [{table: pc_people, column: ssn, strategy: Redact}]
`
    : ''
}`;
}

describe('policy change and prepared statements', () => {
  const server = inject('pg');
  let dir: string;
  let sidecar: Sidecar;
  const file = () => path.join(dir, 'policy.yaml');

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dbguard-pc-'));
    fs.writeFileSync(file(), policyText(server.port, false));
    await adminQuery(
      server,
      `DROP TABLE IF EXISTS pc_people; CREATE TABLE pc_people (id int, ssn text);
      INSERT INTO pc_people VALUES (1, '111-22-3333'); GRANT ALL ON pc_people TO app;`,
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

  const connect = async () => {
    const c = new pg.Client({
      host: sidecar.proxy.host,
      port: sidecar.proxy.port,
      user: 'app',
      password: 'app',
      database: 'app',
    });
    const errors: Error[] = [];
    c.on('error', (e) => errors.push(e));
    await c.connect();
    return { c, errors };
  };
  const named = { name: 'read-ssn', text: 'SELECT ssn FROM pc_people WHERE id = $1', values: [1] };

  it('ends sessions whose prepared statements the new policy would rewrite; others carry on', async () => {
    const prepared = await connect();
    const plain = await connect();
    expect((await prepared.c.query(named)).rows[0].ssn).toBe('111-22-3333');
    expect((await plain.c.query('SELECT 1 AS one')).rows[0].one).toBe(1);
    const before = sidecar.policy()!.version;

    fs.writeFileSync(file(), policyText(server.port, true));
    await until('new policy', () => sidecar.policy()!.version !== before);

    // the session holding `read-ssn` (prepared unmasked) is gone: it can never execute it again
    await until('prepared session ended', () => prepared.errors.length > 0 || undefined);
    expect(prepared.errors[0]).toMatchObject({ code: '57P01', severity: 'FATAL' });
    await expect(prepared.c.query(named)).rejects.toThrow();
    // the plain session continues, and the next statement follows the new policy
    expect((await plain.c.query('SELECT ssn FROM pc_people WHERE id = 1')).rows[0].ssn).toBe('****');
    // a reconnecting client prepares again, under the new policy
    const again = await connect();
    expect((await again.c.query(named)).rows[0].ssn).toBe('****');
    await Promise.all([plain.c.end(), again.c.end(), prepared.c.end().catch(() => {})]);
  });

  it('ends a session that used SQL-level PREPARE when the policy changes', async () => {
    const s = await connect();
    await s.c.query('PREPARE p2 AS SELECT ssn FROM pc_people');
    const before = sidecar.policy()!.version;
    fs.writeFileSync(file(), policyText(server.port, false));
    await until('new policy', () => sidecar.policy()!.version !== before);
    await until('ended', () => s.errors.length > 0 || undefined);
    expect(s.errors[0]).toMatchObject({ code: '57P01', severity: 'FATAL' });
    await expect(s.c.query('EXECUTE p2')).rejects.toThrow();
    await s.c.end().catch(() => {});
  });
});
