/**
 * No secret in rewritten SQL (issue 17, done-when): every Secret value of the project's policy fixtures
 * (the contract example, examples/, the reliability policy) is searched for in what the engine makes of
 * a set of masked statements: the SQL sent upstream, the message, the whole decision. The Hash keys are
 * also searched for in the compiled policies. Judged as a masked subject against a real catalog (the
 * masked tables created from the policies, `dbguard db install` done), so every rewrite really happens.
 */
import fs from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import type { CompiledPolicy } from '../../api/compiled.js';
import { reliabilityPolicyYaml } from '../../bench/reliability/support.js';
import { quoteIdent } from '../../policy/ast.js';
import type { Identity } from '../../policy/identity.js';
import { judge } from '../../policy/judge.js';
import { loadPolicyFiles } from '../../policy/load.js';
import { initParser } from '../../policy/parser.js';
import { ROOT } from '../chart/paths.js';
import { adminQuery } from '../support/admin.js';
import { installHashKeys } from '../support/hash-key.js';
import { loadCatalog, sessionOf } from './fixtures.js';

const DB = `no_secret_sql_${process.pid}`;

const SOURCES: { name: string; text: string }[] = [
  ...['test/api/fixtures/contract.yaml', 'examples/demo/policy.yaml']
    .concat(
      fs
        .readdirSync(path.join(ROOT, 'examples/policies'))
        .filter((f) => f.endsWith('.yaml'))
        .map((f) => `examples/policies/${f}`),
    )
    .map((name) => ({ name, text: fs.readFileSync(path.join(ROOT, name), 'utf8') })),
  {
    name: 'reliability policy',
    text: reliabilityPolicyYaml({ schema: 'public', upstreamPort: 5432, salt: 'reliability-salt-value' }),
  },
];

/**
 * The secret strings of every Secret document: passwords, salts, tokens. Not a `username` (a role name,
 * not a secret, and as short as words of SQL) nor a CA certificate (public).
 */
function secretValues(): { value: string; where: string }[] {
  const out: { value: string; where: string }[] = [];
  for (const src of SOURCES) {
    for (const doc of parseAllDocuments(src.text)) {
      const d = doc.toJS() as {
        kind?: string;
        metadata?: { name?: string };
        stringData?: Record<string, string>;
        data?: Record<string, string>;
      } | null;
      if (d?.kind !== 'Secret') continue;
      const add = (key: string, value: string) => {
        if (key === 'username' || key.endsWith('.crt')) return;
        out.push({ value, where: `${src.name}: Secret ${d.metadata?.name} key ${key}` });
      };
      for (const [k, v] of Object.entries(d.stringData ?? {})) add(k, v);
      for (const [k, v] of Object.entries(d.data ?? {})) add(k, Buffer.from(v, 'base64').toString('utf8'));
    }
  }
  return out;
}

const policies: { name: string; compiled: CompiledPolicy }[] = SOURCES.flatMap((src) => {
  const r = loadPolicyFiles([src]);
  if (!r.ok) throw new Error(`${src.name}: ${r.errors.join('; ')}`);
  return [{ name: src.name, compiled: r.compiled }];
});

/** Masked tables of every policy with their masked columns (all created as text, plus id). */
function maskedTables(): Map<string, { schema: string; table: string; columns: Set<string> }> {
  const out = new Map<string, { schema: string; table: string; columns: Set<string> }>();
  for (const { compiled } of policies) {
    for (const rule of compiled.masking) {
      for (const c of rule.columns) {
        const key = `${c.schema}.${c.table}`;
        const t = out.get(key) ?? { schema: c.schema, table: c.table, columns: new Set<string>() };
        t.columns.add(c.column);
        out.set(key, t);
      }
    }
  }
  return out;
}

/** A masked subject for every fixture policy (none of them exempts it). */
const masked: Identity = { groups: ['nobody'], databaseUser: 'app', serviceAccount: 'nowhere/nobody' };

function statementsFor(t: { schema: string; table: string; columns: Set<string> }): string[] {
  const T = `${quoteIdent(t.schema)}.${quoteIdent(t.table)}`;
  const out = [
    `SELECT * FROM ${T}`,
    `TABLE ${T}`,
    `COPY ${T} TO STDOUT`,
    `EXPLAIN SELECT * FROM ${T}`,
    `SELECT (SELECT count(*) FROM ${T} x) AS n, * FROM ${T}`,
    `INSERT INTO ${T} SELECT * FROM ${T} WHERE false`,
    `DECLARE cur CURSOR WITH HOLD FOR SELECT * FROM ${T}`,
    `PREPARE p AS SELECT * FROM ${T}`,
  ];
  for (const c of t.columns) {
    const C = quoteIdent(c);
    out.push(
      `SELECT ${C}, count(*) FROM ${T} GROUP BY 1 ORDER BY 1`,
      `SELECT a.${C} FROM ${T} a JOIN ${T} b ON a.${C} = b.${C}`,
      `WITH x AS (SELECT * FROM ${T}) SELECT * FROM x WHERE ${C} = 'v'`,
      `UPDATE ${T} SET id = id WHERE ${C} = 'v' RETURNING *`,
      `DELETE FROM ${T} WHERE ${C} IN (SELECT ${C} FROM ${T}) RETURNING ${C}`,
    );
  }
  return out;
}

let admin: pg.Client;
let app: pg.Client;

beforeAll(async () => {
  await initParser();
  const server = inject('pg');
  await adminQuery(server, `DROP DATABASE IF EXISTS ${DB}`);
  await adminQuery(server, `CREATE DATABASE ${DB}`);
  const ddl: string[] = [];
  for (const t of maskedTables().values()) {
    const cols = [...t.columns].map((c) => `${quoteIdent(c)} text`).join(', ');
    ddl.push(
      `CREATE SCHEMA IF NOT EXISTS ${quoteIdent(t.schema)}`,
      `CREATE TABLE ${quoteIdent(t.schema)}.${quoteIdent(t.table)} (id int, ${cols})`,
      `GRANT USAGE ON SCHEMA ${quoteIdent(t.schema)} TO app`,
      `GRANT ALL ON ${quoteIdent(t.schema)}.${quoteIdent(t.table)} TO app`,
    );
  }
  await adminQuery(server, ddl.join(';\n'), DB);
  // the function (and one key: which keys are installed does not change the rewrite)
  await installHashKeys(server, DB, { 'shop/pii-salt/salt': 's3cret-salt' });
  admin = new pg.Client({ ...serverConfig(), database: DB });
  app = new pg.Client({ ...serverConfig(), user: 'app', password: 'app', database: DB });
  await Promise.all([admin.connect(), app.connect()]);
}, 60_000);

function serverConfig() {
  const s = inject('pg');
  return { host: s.host, port: s.port, user: s.user, password: s.password };
}

afterAll(async () => {
  await Promise.all([admin?.end(), app?.end()]);
  await adminQuery(inject('pg'), `DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`);
});

describe('no secret of the fixtures in rewritten SQL or a compiled policy', () => {
  it('the fixtures have secrets to search for, Hash keys among them', () => {
    const values = secretValues().map((s) => s.value);
    expect(values).toEqual(expect.arrayContaining(['s3cret-salt', 'app-password', 'reliability-salt-value']));
  });

  it('no Hash key in any compiled policy (the key id stands in for it)', () => {
    const hashKeyRefs = secretValues().filter((s) => /salt/.test(s.where));
    expect(hashKeyRefs.length).toBeGreaterThanOrEqual(3);
    for (const { name, compiled } of policies) {
      const json = JSON.stringify(compiled);
      for (const s of hashKeyRefs) expect(json.includes(s.value), `${name} holds ${s.where}`).toBe(false);
    }
  });

  it.each(policies.map((p) => [p.name, p] as const))('%s: every masked statement', async (_name, p) => {
    const catalog = await loadCatalog(app, p.compiled);
    expect(catalog.hashFunction).toEqual({ usable: true });
    const secrets = secretValues();
    const tables = [...maskedTables().values()].filter((t) =>
      p.compiled.masking.some((r) => r.columns.some((c) => c.schema === t.schema && c.table === t.table)),
    );
    let masks = 0;
    for (const t of tables) {
      for (const sql of statementsFor(t)) {
        // rules do not matter here, only the masking rewrite: judge as under defaultAction Allow (the
        // demo's allow-list would refuse this test's identity before anything is rewritten)
        const d = judge(sql, sessionOf(masked, catalog, DB), {
          ...p.compiled,
          defaultAction: 'Allow',
          rules: [],
        });
        if (d.kind === 'mask') masks++;
        const all = JSON.stringify(d);
        for (const s of secrets)
          expect(all.includes(s.value), `${sql}\n→ ${d.sql}\nholds ${s.where}`).toBe(false);
        const hashed = p.compiled.masking.some((r) =>
          r.columns.some((c) => c.strategy === 'Hash' && c.schema === t.schema && c.table === t.table),
        );
        if (d.kind === 'mask' && hashed) expect(d.sql).toContain('dbguard.hash(');
      }
    }
    // the statements really were rewritten (a policy without masking has nothing to search)
    if (tables.length) expect(masks).toBeGreaterThan(tables.length * 3);
  });
});
