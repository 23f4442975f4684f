/**
 * A misspelled MaskingRule against the database it protects. The attack: `column: ssnn` (the table
 * has `ssn`) used to mask nothing, and a masked subject read `987-65-4321` in clear while the proxy
 * said `policy loaded`. Now the sidecar refuses that subject the table (fail closed), logs the
 * problem once per policy version and database with the nearest name, counts it and shows it on
 * /readyz; a misspelled table is reported the same way. `dbguard check --upstream URL --lint` finds
 * both before deployment and exits 1.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { LogLevel } from '../../sidecar/log.js';
import { type Sidecar, startSidecar } from '../../sidecar/runtime.js';
import { CLI } from '../chart/paths.js';
import { adminQuery, queryOnce } from '../support/admin.js';

const server = inject('pg');
const run = promisify(execFile);
const TABLE = `mrc_${process.pid}_customers`;
const SECRET = '987-65-4321';
let tmp: string;

function policyYaml(columns: string): string {
  return `apiVersion: dbguard.io/v1alpha1
kind: DatabasePolicy
metadata: {name: shop, namespace: demo}
spec:
  upstream: {host: ${server.host}, port: ${server.port}, sslmode: disable}
  defaultAction: Allow
---
apiVersion: dbguard.io/v1alpha1
kind: MaskingRule
metadata: {name: pii, namespace: demo}
spec:
  policyRef: {name: shop}
  exemptSubjects: [{kind: DatabaseUser, name: postgres}]
  columns:
${columns}
`;
}

const TYPO_COLUMN = `    - {table: ${TABLE}, column: ssnn, strategy: Redact}
    - {table: ${TABLE}, column: email, strategy: Email}`;
const TYPO_TABLE = `    - {table: ${TABLE.replace(/s$/, 'z')}, column: ssn, strategy: Redact}`;
const RIGHT = `    - {table: ${TABLE}, column: ssn, strategy: Redact}`;

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dbguard-mrc-'));
  await adminQuery(
    server,
    `DROP TABLE IF EXISTS ${TABLE};
     CREATE TABLE ${TABLE} (id int, ssn text, email text);
     INSERT INTO ${TABLE} VALUES (1, '${SECRET}', 'alice@example.org');
     GRANT SELECT ON ${TABLE} TO app;`,
  );
});

afterAll(async () => {
  await adminQuery(server, `DROP TABLE IF EXISTS ${TABLE}`);
  fs.rmSync(tmp, { recursive: true, force: true });
});

interface Started {
  sidecar: Sidecar;
  logs: { level: LogLevel; msg: string; fields?: Record<string, unknown> }[];
}

async function start(columns: string): Promise<Started> {
  const file = path.join(tmp, `policy-${Math.random().toString(36).slice(2)}.yaml`);
  fs.writeFileSync(file, policyYaml(columns));
  const logs: Started['logs'] = [];
  const sidecar = await startSidecar({
    listen: { host: '127.0.0.1', port: 0 },
    upstream: { host: server.host, port: server.port, sslmode: 'disable' },
    policyFiles: [file],
    metricsListen: '127.0.0.1:0',
    logger: { log: (level, msg, fields) => logs.push({ level, msg, ...(fields ? { fields } : {}) }) },
  });
  return { sidecar, logs };
}

const as = (s: Sidecar, user: 'app' | 'postgres', sql: string, database = 'app') =>
  queryOnce(
    {
      host: s.proxy.host,
      port: s.proxy.port,
      user,
      password: user === 'app' ? 'app' : server.password,
      database,
    },
    sql,
  );

async function readyz(s: Sidecar): Promise<{ ok: boolean; reasons: string[]; details?: string[] }> {
  return (await fetch(`${s.health!.url}/readyz`)).json() as Promise<{
    ok: boolean;
    reasons: string[];
    details?: string[];
  }>;
}

describe('MaskingRules checked against the database', () => {
  it('a misspelled column: the masked subject is refused the table, never sees the value', async () => {
    const { sidecar: s, logs } = await start(TYPO_COLUMN);
    try {
      for (const sql of [
        `SELECT * FROM ${TABLE}`,
        `SELECT ssn FROM ${TABLE}`,
        `SELECT id FROM ${TABLE} WHERE ssn LIKE '9%'`,
      ]) {
        const err = await as(s, 'app', sql).then(
          (r) => JSON.stringify(r.rows),
          (e: Error & { code?: string }) => e,
        );
        expect(err, sql).not.toEqual(expect.stringContaining(SECRET));
        expect(err).toMatchObject({
          code: '42501',
          message: `dbguard: MaskingRule demo/pii masks column ssnn of public.${TABLE}, which does not exist (did you mean ssn?); the table is refused to masked subjects until the rule is fixed (fail closed)`,
        });
      }
      // Other tables are not affected; the exempt subject reads the table.
      expect((await as(s, 'app', 'SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
      expect((await as(s, 'postgres', `SELECT ssn FROM ${TABLE}`)).rows).toEqual([{ ssn: SECRET }]);

      // Logged once for this policy version and database, however many sessions read the catalog.
      const logged = logs.filter((l) => l.msg === 'masking rule matches nothing in the database');
      expect(logged).toHaveLength(1);
      expect(logged[0]).toMatchObject({
        level: 'error',
        fields: {
          database: 'app',
          rule: 'demo/pii',
          reason: 'column_not_found',
          column: 'ssnn',
          suggestion: 'ssn',
        },
      });
      const metrics = await (await fetch(`${s.health!.url}/metrics`)).text();
      expect(metrics).toMatch(
        /^dbguard_masking_rule_problems\{policy="demo\/shop",rule="demo\/pii",reason="column_not_found"\} 1$/m,
      );
      expect(metrics).toMatch(
        /^dbguard_denied_queries_total\{policy="demo\/shop",rule="\(masking\)",reason="masking_rule_broken"\} 3$/m,
      );
      const ready = await readyz(s);
      expect(ready.ok).toBe(true);
      expect(ready.details).toEqual([
        expect.stringMatching(
          /^database app: MaskingRule demo\/pii: column ssnn of .* \(did you mean ssn\?\)/,
        ),
      ]);
      // Another database has its own catalog (without the table): logged for it too, once.
      await as(s, 'app', 'SELECT 1', 'postgres');
      await as(s, 'app', 'SELECT 1', 'postgres');
      const again = logs.filter((l) => l.msg === 'masking rule matches nothing in the database');
      expect(again.map((l) => [l.fields?.database, l.fields?.reason])).toEqual([
        ['app', 'column_not_found'],
        ['postgres', 'table_not_found'],
      ]);
    } finally {
      await s.close();
    }
  });

  it('a misspelled table is reported with the nearest name', async () => {
    const { sidecar: s, logs } = await start(TYPO_TABLE);
    try {
      await as(s, 'app', 'SELECT 1');
      const logged = logs.filter((l) => l.msg === 'masking rule matches nothing in the database');
      expect(logged.map((l) => l.fields?.message)).toEqual([
        `MaskingRule demo/pii: table public.${TABLE.replace(/s$/, 'z')} does not exist, so its rules mask nothing (did you mean public.${TABLE}?)`,
      ]);
      expect((await readyz(s)).details).toEqual([expect.stringContaining(`did you mean public.${TABLE}?`)]);
    } finally {
      await s.close();
    }
  });

  it('a right rule: masked, nothing reported; a parse error is labelled (unparseable)', async () => {
    const { sidecar: s, logs } = await start(RIGHT);
    try {
      expect((await as(s, 'app', `SELECT ssn FROM ${TABLE}`)).rows).toEqual([{ ssn: '****' }]);
      expect(logs.filter((l) => l.msg === 'masking rule matches nothing in the database')).toEqual([]);
      expect((await readyz(s)).details).toBeUndefined();
      // A statement that does not parse is labelled as such, not as a defaultAction block.
      await expect(as(s, 'app', 'SELEC 1')).rejects.toMatchObject({ code: '42601' });
      const metrics = await (await fetch(`${s.health!.url}/metrics`)).text();
      expect(metrics).toMatch(
        /^dbguard_denied_queries_total\{policy="demo\/shop",rule="\(unparseable\)",reason="unparseable"\} 1$/m,
      );
      expect(metrics).not.toMatch(/rule="\(defaultAction\)"/);
    } finally {
      await s.close();
    }
  });

  it('dbguard check --upstream URL --lint names every problem, suggests, exits 1; 0 when right', async () => {
    const url = `postgres://app:app@${server.host}:${server.port}/app`;
    const file = path.join(tmp, 'lint.yaml');
    fs.writeFileSync(file, policyYaml(`${TYPO_COLUMN}\n${TYPO_TABLE}`));
    const bad = await run(process.execPath, [
      CLI,
      'check',
      '--policy-file',
      file,
      '--upstream',
      url,
      '--lint',
    ]).then(
      () => undefined,
      (e: { code: number; stdout: string; stderr: string }) => e,
    );
    expect(bad?.code).toBe(1);
    expect(bad!.stderr.trim().split('\n')).toEqual([
      `dbguard check: MaskingRule demo/pii: column ssnn of public.${TABLE} does not exist (did you mean ssn?); masked subjects are refused on the table until the rule is fixed`,
      `dbguard check: MaskingRule demo/pii: table public.${TABLE.replace(/s$/, 'z')} does not exist, so its rules mask nothing (did you mean public.${TABLE}?)`,
    ]);
    expect(
      JSON.parse(bad!.stdout).problems.map((p: { reason: string; suggestion: string }) => [
        p.reason,
        p.suggestion,
      ]),
    ).toEqual([
      ['column_not_found', 'ssn'],
      ['table_not_found', `public.${TABLE}`],
    ]);
    fs.writeFileSync(file, policyYaml(RIGHT));
    const good = await run(process.execPath, [
      CLI,
      'check',
      '--policy-file',
      file,
      '--upstream',
      url,
      '--lint',
    ]);
    expect(JSON.parse(good.stdout)).toMatchObject({ problems: [], maskedColumns: 1 });
  });
});
