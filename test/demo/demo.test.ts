/**
 * `dbguard demo` does what the README promises: masked for analyst, real for auditor, DROP blocked, and
 * the intern's allow-list refuses a join to a table it does not name.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ALLOW_LIST_TOUR, type DemoHandle, startDemo, TOUR } from '../../cli/demo.js';
import { verifyAuditFiles } from '../../sidecar/audit/verify.js';
import { until } from '../support/until.js';

describe('dbguard demo', () => {
  let demo: DemoHandle;
  beforeAll(async () => {
    demo = await startDemo({ listen: '127.0.0.1:0' });
  }, 120_000);
  afterAll(async () => {
    await demo?.close();
  });

  async function query(user: string, sql: string) {
    const c = new pg.Client({ host: demo.proxyHost, port: demo.proxyPort, user, database: 'postgres' });
    await c.connect();
    try {
      return await c.query(sql);
    } finally {
      await c.end();
    }
  }

  it('masks customer PII for the analyst and shows it to the auditor', async () => {
    const masked = await query('analyst', 'SELECT email, ssn, card_number FROM customers WHERE id = 1');
    expect(masked.rows[0]).toEqual({
      email: 'a***@example.org',
      ssn: '****',
      card_number: '************1111',
    });
    const real = await query('auditor', 'SELECT email, ssn FROM customers WHERE id = 1');
    expect(real.rows[0]).toEqual({ email: 'ada@example.org', ssn: '123-45-6789' });
  });

  it('blocks DROP TABLE with the rule message and keeps the table', async () => {
    await expect(query('analyst', 'DROP TABLE orders')).rejects.toMatchObject({
      code: '42501',
      message: 'dbguard: Schema changes go through migrations. (rule no-destructive-ddl)',
    });
    const r = await query('auditor', 'SELECT count(*)::int AS n FROM orders');
    expect(r.rows[0].n).toBe(40);
  });

  it("the intern's allow-list runs what it names and refuses a join to customers, naming the pair", async () => {
    const [allowed, refused] = ALLOW_LIST_TOUR;
    const ok = await query('intern', allowed!.sql);
    expect(ok.rows.length).toBeGreaterThan(0);
    await expect(query('intern', refused!.sql)).rejects.toMatchObject({
      code: '42501',
      message:
        'dbguard: statement denied by policy: no rule allows SELECT on public.customers (rule default)',
    });
    // every other way to reach customers from orders is refused too
    for (const sql of [
      'SELECT email FROM customers, orders LIMIT 1',
      'SELECT (SELECT ssn FROM customers LIMIT 1) FROM orders',
      'WITH d AS (DELETE FROM orders WHERE id = 1 RETURNING 1) SELECT count(*) FROM orders',
    ])
      await expect(query('intern', sql), sql).rejects.toMatchObject({ code: '42501' });
    expect((await query('auditor', 'SELECT count(*)::int AS n FROM orders')).rows[0].n).toBe(40);
    // an identity the allow-list does not name gets nothing
    await expect(query('stranger', 'SELECT 1 FROM orders')).rejects.toMatchObject({ code: '42501' });
  });

  it('the tour queries run for the staff under the allow-list', async () => {
    for (const user of ['analyst', 'auditor'])
      for (const q of TOUR)
        if (!q.sql.startsWith('DROP'))
          expect((await query(user, q.sql)).rows.length, q.sql).toBeGreaterThan(0);
  });

  it('works with psql as printed, and writes a verifiable audit trail', async () => {
    // async: the proxy and the embedded database live in this process, a sync child would block them
    const { stdout } = await promisify(execFile)('psql', [
      '-X',
      '-At',
      '-c',
      'SELECT ssn FROM customers ORDER BY id LIMIT 1',
      `postgres://analyst@${demo.proxyHost}:${demo.proxyPort}/postgres`,
    ]);
    expect(stdout.trim()).toBe('****');
    // this test's own denial (it does not lean on the DROP test above)
    await expect(query('analyst', 'TRUNCATE TABLE orders')).rejects.toMatchObject({ code: '42501' });
    const events = () =>
      fs
        .readFileSync(demo.auditFile, 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l));
    await until('the denial is in the audit file', () =>
      events().some(
        (e) => e.event === 'query' && e.decision === 'deny' && e.statement?.command === 'TRUNCATE TABLE',
      ),
    );
    expect(events().some((e) => e.event === 'query' && e.decision === 'mask')).toBe(true);
    expect(fs.readFileSync(demo.auditFile, 'utf8')).not.toContain('123-45-6789');
    // verifiable: the hash chain checks out, and the same file with one line removed does not
    expect(await verifyAuditFiles([demo.auditFile])).toMatchObject({ ok: true });
    const lines = fs.readFileSync(demo.auditFile, 'utf8').trim().split('\n');
    expect(lines.length).toBeGreaterThan(3);
    const cut = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'demo-audit-')), 'audit.jsonl');
    fs.writeFileSync(cut, [...lines.slice(0, 1), ...lines.slice(2)].join('\n') + '\n');
    expect(await verifyAuditFiles([cut])).toMatchObject({ ok: false });
  });
});
