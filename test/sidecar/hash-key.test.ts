/**
 * The Hash strategy without a key in the SQL (issue 17, item 5), through the real proxy on a cluster of
 * its own (statement log and pg_stat_statements on): `dbguard db install` (the built CLI) puts the
 * keyed function into the database; masked reads get HMAC-SHA256 pseudonyms; no text the server sees
 * (pg_stat_activity from a second connection, the statement log, pg_stat_statements, `dbguard check`)
 * holds the key or its HMAC pads; EXPLAIN VERBOSE is refused; the key table is closed to the app role;
 * where the function is missing or could be replaced by the login role, Hash is refused, never weakened.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hmacPads } from '../../cli/hash-key-store.js';
import { loadPolicyFiles } from '../../policy/load.js';
import { type Sidecar, startSidecar } from '../../sidecar/runtime.js';
import { runDbguard } from '../examples/cli.js';
import { adminQuery } from '../support/admin.js';
import { type RunningCluster, startCluster } from '../support/pg-cluster.js';
import { until } from '../support/until.js';

const KEY = `hk-${crypto.randomBytes(8).toString('hex')}`;
const KEY_ID = 'shop/pii-key/key';
const PADS = hmacPads(Buffer.from(KEY, 'utf8'));
/** Every form of the key: none may ever be in a text the server sees or a client gets. */
const SECRETS = [KEY, PADS.inner.toString('hex'), PADS.outer.toString('hex')];
const REFS = ['REF-0001', 'REF-0002', 'REF-0003'];

const hmac = (v: string) => crypto.createHmac('sha256', KEY).update(v).digest('hex');
const sha = (v: string) => crypto.createHash('sha256').update(v).digest('hex');

const POLICY = `
apiVersion: dbguard.io/v1alpha1
kind: DatabasePolicy
metadata: {name: hk, namespace: shop}
spec:
  upstream: {host: 127.0.0.1, port: 5432, sslmode: disable}
  defaultAction: Allow
---
apiVersion: dbguard.io/v1alpha1
kind: MaskingRule
metadata: {name: pii, namespace: shop}
spec:
  policyRef: {name: hk}
  columns:
    - {table: shop.customers, column: ref, strategy: Hash, hash: {saltSecretRef: {name: pii-key, key: key}}}
    - {table: shop.customers, column: ssn, strategy: Redact}
    - {table: shop.orders, column: customer_ref, strategy: Hash, hash: {saltSecretRef: {name: pii-key, key: key}}}
  exemptSubjects: [{kind: DatabaseUser, name: postgres}]
---
apiVersion: v1
kind: Secret
metadata: {name: pii-key, namespace: shop}
stringData: {key: "${KEY}"}
`;

const SCHEMA_SQL = `
  CREATE SCHEMA shop;
  CREATE TABLE shop.customers (id int PRIMARY KEY, ref text, ssn text);
  CREATE TABLE shop.orders (id int PRIMARY KEY, customer_ref text, total int);
  INSERT INTO shop.customers VALUES (1, '${REFS[0]}', '111-11-1111'), (2, '${REFS[1]}', '222-22-2222'),
    (3, '${REFS[2]}', '333-33-3333');
  INSERT INTO shop.orders VALUES (10, '${REFS[0]}', 5), (11, '${REFS[0]}', 7), (12, '${REFS[2]}', 1);
  GRANT USAGE ON SCHEMA shop TO app;
  GRANT SELECT ON ALL TABLES IN SCHEMA shop TO app;`;

let cluster: RunningCluster;
let sidecar: Sidecar;
let dir: string;
let policyFile: string;
let keyFile: string;
const proxyLog: { msg: string; fields?: Record<string, unknown> }[] = [];

const url = (db: string, user = 'postgres', password = user) =>
  `postgres://${user}:${password}@${cluster.host}:${cluster.port}/${db}`;
const serverLog = () => fs.readFileSync(path.join(path.dirname(cluster.dataDir), 'server.log'), 'utf8');

async function proxied(database: string, user = 'app'): Promise<pg.Client> {
  const c = new pg.Client({
    host: sidecar.proxy.host,
    port: sidecar.proxy.port,
    user,
    password: user === 'app' ? 'app' : 'postgres',
    database,
  });
  await c.connect();
  return c;
}

async function direct(database: string, user = 'postgres'): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: url(database, user) });
  await c.connect();
  return c;
}

/** The error a statement gets (undefined: it ran). */
async function errorOf(c: pg.Client, sql: string): Promise<pg.DatabaseError | undefined> {
  try {
    await c.query(sql);
    return undefined;
  } catch (e) {
    return e as pg.DatabaseError;
  }
}

beforeAll(async () => {
  cluster = await startCluster({
    settings: { log_statement: "'all'", shared_preload_libraries: "'pg_stat_statements'" },
  });
  for (const db of ['hk', 'hk_none', 'hk_planted']) {
    await adminQuery(cluster, `CREATE DATABASE ${db}${db === 'hk_planted' ? ' OWNER app' : ''}`, 'postgres');
    await adminQuery(cluster, SCHEMA_SQL, db);
  }
  await adminQuery(cluster, 'CREATE EXTENSION pg_stat_statements', 'hk');
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dbguard-hashkey-'));
  policyFile = path.join(dir, 'policy.yaml');
  fs.writeFileSync(policyFile, POLICY);
  keyFile = path.join(dir, 'key');
  fs.writeFileSync(keyFile, KEY);
  const loaded = loadPolicyFiles([{ name: policyFile, text: POLICY }]);
  if (!loaded.ok) throw new Error(loaded.errors.join('\n'));
  sidecar = await startSidecar({
    listen: { host: '127.0.0.1', port: 0 },
    upstream: { host: cluster.host, port: cluster.port, sslmode: 'disable' },
    initialPolicy: loaded.compiled,
    logger: { log: (_level, msg, fields) => proxyLog.push({ msg, fields }) },
  });
}, 120_000);

afterAll(async () => {
  await sidecar?.close();
  await cluster?.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe('dbguard db install', () => {
  it('installs the function and the key from a key file, says what it did, and is idempotent', async () => {
    const args = [
      'dbguard',
      'db',
      'install',
      '--upstream',
      url('hk'),
      '--key-id',
      KEY_ID,
      '--key-file',
      keyFile,
    ];
    const first = await runDbguard(args);
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).toContain('created schema dbguard in database hk');
    expect(first.stdout).toContain(`key ${KEY_ID}: installed`);
    const again = await runDbguard(args);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toContain('updated schema dbguard');
    expect(again.stdout).toContain(`key ${KEY_ID}: unchanged`);
    for (const s of SECRETS) expect(first.stdout + first.stderr + again.stdout).not.toContain(s);
    // status as the app role (what the proxy logs in as): usable, and the key the policy needs is there
    const st = await runDbguard([
      'dbguard',
      'db',
      'status',
      '--upstream',
      url('hk', 'app'),
      '--policy-file',
      policyFile,
    ]);
    expect(st.stdout).toContain('usable by proxies logging in as app: yes');
    expect(st.stdout).toContain(`policy key ${KEY_ID}: installed`);
    expect(st.code, st.stdout).toBe(0);
    // the DBA's own superuser login could replace the function: status says so
    const su = await runDbguard(['dbguard', 'db', 'status', '--upstream', url('hk')]);
    expect(su.stdout).toMatch(/usable by proxies logging in as postgres: no \(.*superuser/);
    expect(su.code).toBe(1);
  }, 120_000);

  it("equals pgcrypto's hmac() where pgcrypto is available (it is not needed)", async () => {
    const avail = await adminQuery(
      cluster,
      "SELECT 1 FROM pg_available_extensions WHERE name = 'pgcrypto'",
      'hk',
    );
    if (!avail.rowCount) return;
    await adminQuery(cluster, 'CREATE EXTENSION IF NOT EXISTS pgcrypto', 'hk');
    // the key is a parameter here: keep it out of the statement log the next test searches
    const su = await direct('hk');
    await su.query("SET log_statement = 'none'");
    try {
      const r = await su.query(
        `SELECT dbguard.hash(v, $1) = encode(hmac(v, $2, 'sha256'), 'hex') AS same FROM unnest($3::text[]) v`,
        [KEY_ID, KEY, ['', 'x', 'é', 'a'.repeat(200), ...REFS]],
      );
      expect(r.rows.map((x) => x.same)).toEqual(Array(7).fill(true));
    } finally {
      await su.end();
      await adminQuery(cluster, 'DROP EXTENSION pgcrypto', 'hk');
    }
  });

  it('--key-from-env installs a key from DBGUARD_HASH_KEY; status lists the ids, never a key', async () => {
    const other = `other-${crypto.randomBytes(6).toString('hex')}`;
    process.env.DBGUARD_HASH_KEY = other;
    try {
      const r = await runDbguard([
        'dbguard',
        'db',
        'install',
        '--upstream',
        url('hk'),
        '--key-id',
        'shop/other/key',
        '--key-from-env',
      ]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toContain('key shop/other/key: installed (from DBGUARD_HASH_KEY)');
    } finally {
      delete process.env.DBGUARD_HASH_KEY;
    }
    const app = await direct('hk', 'app');
    try {
      const h = (await app.query("SELECT dbguard.hash('v', 'shop/other/key') AS h")).rows[0].h;
      expect(h).toBe(crypto.createHmac('sha256', other).update('v').digest('hex'));
    } finally {
      await app.end();
    }
    const st = await runDbguard(['dbguard', 'db', 'status', '--upstream', url('hk', 'app')]);
    expect(st.stdout).toContain(`keys: shop/other/key, ${KEY_ID}`);
    expect(st.stdout).not.toContain(other);
    expect(serverLog()).not.toContain(other);
  }, 60_000);

  it('refuses bad input clearly, changing nothing', async () => {
    const noKey = await runDbguard([
      'dbguard',
      'db',
      'install',
      '--upstream',
      url('hk_none'),
      '--key-id',
      KEY_ID,
    ]);
    expect(noKey.code).toBe(2);
    expect(noKey.stderr).toContain('--key-id needs --key-file or --key-from-env');
    const badId = await runDbguard([
      'dbguard',
      'db',
      'install',
      '--upstream',
      url('hk_none'),
      '--key-id',
      'no-slashes',
      '--key-file',
      keyFile,
    ]);
    expect(badId.code).toBe(2);
    expect(badId.stderr).toContain('expected NAMESPACE/SECRET/KEY');
    // the app role may not create the schema: a one-line error, no stack
    const denied = await runDbguard(['dbguard', 'db', 'install', '--upstream', url('hk_none', 'app')]);
    expect(denied.code).toBe(1);
    expect(denied.stderr).toMatch(/^dbguard db: permission denied for database hk_none\n$/);
    const r = await adminQuery(
      cluster,
      "SELECT count(*)::int AS n FROM pg_namespace WHERE nspname = 'dbguard'",
      'hk_none',
    );
    expect(r.rows[0].n).toBe(0);
  }, 60_000);
});

describe('Hash through the proxy after db install', () => {
  it('gives HMAC-SHA256 pseudonyms: deterministic, joinable, groupable, not a plain or salted sha256', async () => {
    const c = await proxied('hk');
    try {
      const rows = (await c.query('SELECT id, ref, ssn FROM shop.customers ORDER BY id')).rows;
      expect(rows.map((r) => r.ref)).toEqual(REFS.map(hmac));
      expect(rows.map((r) => r.ssn)).toEqual(['****', '****', '****']);
      for (const [i, r] of rows.entries()) {
        expect(r.ref).not.toBe(sha(REFS[i]!));
        expect(r.ref).not.toBe(sha(KEY + REFS[i]!)); // the old inlined-salt form
      }
      // the same pseudonyms in another session
      const c2 = await proxied('hk');
      expect((await c2.query('SELECT ref FROM shop.customers ORDER BY id')).rows.map((r) => r.ref)).toEqual(
        REFS.map(hmac),
      );
      await c2.end();
      // a join and GROUP BY on pseudonyms of two tables hashed with the same key
      const joined = await c.query(
        'SELECT c.ref, count(*)::int AS n, sum(o.total)::int AS total FROM shop.customers c' +
          ' JOIN shop.orders o ON o.customer_ref = c.ref GROUP BY c.ref ORDER BY n DESC',
      );
      expect(joined.rows).toEqual([
        { ref: hmac(REFS[0]!), n: 2, total: 12 },
        { ref: hmac(REFS[2]!), n: 1, total: 1 },
      ]);
      // a predicate on the real value finds nothing: it sees the pseudonym
      expect(
        (await c.query(`SELECT count(*)::int AS n FROM shop.customers WHERE ref = '${REFS[0]}'`)).rows[0].n,
      ).toBe(0);
    } finally {
      await c.end();
    }
    // the exempt subject sees real values
    const e = await proxied('hk', 'postgres');
    expect((await e.query('SELECT ref FROM shop.customers ORDER BY id')).rows.map((r) => r.ref)).toEqual(
      REFS,
    );
    await e.end();
  });

  it('no text the server sees holds the key: pg_stat_activity (admin and the app role), the log, pg_stat_statements', async () => {
    const c = await proxied('hk');
    const admin = await direct('hk');
    const appDirect = await direct('hk', 'app');
    try {
      const running = c.query("SELECT ref, pg_sleep(1.5) FROM shop.customers WHERE ref <> 'x'");
      const seen = async (who: pg.Client) =>
        until('the masked statement in pg_stat_activity', async () => {
          const r = await who.query(
            // not the other watcher's own query, which also holds the pattern
            "SELECT query FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%pg_sleep(1.5)%' AND query NOT LIKE '%pg_stat_activity%'",
          );
          return r.rows[0]?.query as string | undefined;
        });
      const [byAdmin, byApp] = await Promise.all([seen(admin), seen(appDirect)]);
      await running;
      for (const text of [byAdmin, byApp]) {
        expect(text).toContain(
          `dbguard.hash(CAST("customers"."ref" AS pg_catalog.text), CAST('${KEY_ID}' AS pg_catalog.text))`,
        );
        for (const s of SECRETS) expect(text).not.toContain(s);
      }
      const stmts = (await admin.query('SELECT query FROM pg_stat_statements')).rows.map(
        (r) => r.query as string,
      );
      expect(stmts.some((q) => q.includes('dbguard.hash('))).toBe(true);
      for (const s of SECRETS) expect(stmts.join('\n')).not.toContain(s);
      // log_statement = all: the install (COPY data is not logged) and every rewritten statement
      const log = serverLog();
      expect(log).toContain('dbguard.hash(CAST(');
      expect(log).toContain('COPY dbguard_key_load');
      for (const s of SECRETS) expect(log).not.toContain(s);
    } finally {
      await Promise.all([c.end(), admin.end(), appDirect.end()]);
    }
  });

  it('dbguard check prints the rewrite with the key id, never the key', async () => {
    const r = await runDbguard([
      'dbguard',
      'check',
      '--policy-file',
      policyFile,
      '--as',
      'dbuser:app',
      '--upstream',
      url('hk', 'app'),
      'SELECT * FROM shop.customers c JOIN shop.orders o ON o.customer_ref = c.ref',
    ]);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.decision).toBe('mask');
    expect(out.rewrittenSql).toContain(`CAST('${KEY_ID}' AS pg_catalog.text)`);
    for (const s of SECRETS) expect(r.stdout).not.toContain(s);
  });

  it('EXPLAIN VERBOSE is refused for a masked subject (42501); the session and plain EXPLAIN still work', async () => {
    const c = await proxied('hk');
    try {
      for (const sql of [
        'EXPLAIN VERBOSE SELECT ref FROM shop.customers',
        'EXPLAIN (ANALYZE, VERBOSE) SELECT ref FROM shop.customers',
        'EXPLAIN (VERBOSE off) SELECT 1',
      ]) {
        const e = await errorOf(c, sql);
        expect(e?.code, sql).toBe('42501');
        expect(e?.message).toBe(
          'dbguard: cannot prove masked: EXPLAIN VERBOSE shows the masking rewrite (rule shop/pii)',
        );
      }
      const plan = (await c.query('EXPLAIN SELECT ref FROM shop.customers')).rows.map((r) => r['QUERY PLAN']);
      expect(plan.join('\n')).toMatch(/Seq Scan on customers/);
      // inside a transaction the refusal aborts it, as any error would
      await c.query('BEGIN');
      expect((await errorOf(c, 'EXPLAIN VERBOSE SELECT 1'))?.code).toBe('42501');
      expect((await errorOf(c, 'SELECT 1'))?.code).toBe('25P02');
      await c.query('ROLLBACK');
      expect((await c.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    } finally {
      await c.end();
    }
    // the exempt subject may explain verbosely
    const e = await proxied('hk', 'postgres');
    expect((await e.query('EXPLAIN VERBOSE SELECT ref FROM shop.customers')).rows.length).toBeGreaterThan(0);
    await e.end();
  });

  it('the key table is closed to the app role: by privilege on the server, and by the proxy', async () => {
    const app = await direct('hk', 'app');
    try {
      for (const sql of ['SELECT * FROM dbguard.hash_keys', 'COPY dbguard.hash_keys TO STDOUT']) {
        const e = await errorOf(app, sql);
        expect(e?.code, sql).toBe('42501');
        expect(e?.message).toBe('permission denied for table hash_keys');
      }
      // what the app role may learn directly: pseudonyms and key ids, never the key
      expect((await app.query('SELECT id FROM dbguard.key_ids() AS id')).rows).toEqual([
        { id: 'shop/other/key' },
        { id: KEY_ID },
      ]);
    } finally {
      await app.end();
    }
    const c = await proxied('hk');
    try {
      for (const [sql, why] of [
        ['SELECT * FROM dbguard.hash_keys', "dbguard.hash_keys is dbguard's own (Hash keys)"],
        ['TABLE dbguard.hash_keys', "dbguard.hash_keys is dbguard's own (Hash keys)"],
        // a pseudonym oracle on guesses would undo the key: only the rewrite may call the function
        [
          `SELECT dbguard.hash('${REFS[0]}', '${KEY_ID}')`,
          "dbguard.hash() is dbguard's own (Hash): only the masking rewrite may call it",
        ],
        ['SELECT * FROM dbguard.key_ids()', "dbguard.key_ids() is dbguard's own"],
      ] as const) {
        const e = await errorOf(c, sql);
        expect(e?.code, sql).toBe('42501');
        expect(e?.message, sql).toContain(why);
      }
    } finally {
      await c.end();
    }
  });
});

describe('where the function is missing or not trustworthy, Hash is refused', () => {
  const refusal = (db: string, why: string) =>
    `dbguard: cannot prove masked: Hash masking of shop.customers.ref needs \`dbguard db install\` in database ${db} (${why}) (rule shop/pii)`;

  it('not installed: a clear refusal; installed while the session runs: works; uninstalled: refused again', async () => {
    const c = await proxied('hk_none');
    try {
      const e = await errorOf(c, 'SELECT id, ref FROM shop.customers');
      expect(e?.code).toBe('42501');
      expect(e?.message).toBe(refusal('hk_none', 'dbguard.hash is not installed'));
      expect((await errorOf(c, 'SELECT count(*) FROM shop.customers'))?.code).toBe('42501');
      expect((await c.query('SELECT 2 AS two')).rows).toEqual([{ two: 2 }]);
      // the proxy's own log says it once, with the key ids to install
      const warned = proxyLog.filter((l) => l.msg.includes('in database hk_none'));
      expect(warned).toEqual([
        {
          msg: 'Hash masking needs `dbguard db install` in database hk_none (dbguard.hash is not installed); masked subjects are refused every statement that reads a Hash-masked column',
          fields: expect.objectContaining({ policy: 'shop/hk', database: 'hk_none', keyIds: [KEY_ID] }),
        },
      ]);
      // the DBA installs it from the policy file's own Secret
      const r = await runDbguard([
        'dbguard',
        'db',
        'install',
        '--upstream',
        url('hk_none'),
        '--policy-file',
        policyFile,
      ]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toContain(`key ${KEY_ID}: installed (from its Secret in the policy files)`);
      expect((await c.query('SELECT ref FROM shop.customers ORDER BY id')).rows.map((x) => x.ref)).toEqual(
        REFS.map(hmac),
      );
      const u = await runDbguard(['dbguard', 'db', 'uninstall', '--upstream', url('hk_none')]);
      expect(u.code, u.stderr).toBe(0);
      expect(u.stdout).toContain('removed dbguard.hash');
      // this session's snapshot still has the function: the server refuses the call (fail closed)
      const stale = await errorOf(c, 'SELECT ref FROM shop.customers');
      expect(stale?.message).toMatch(/schema "dbguard" does not exist|needs `dbguard db install`/);
    } finally {
      await c.end();
    }
    const fresh = await proxied('hk_none');
    try {
      expect((await errorOf(fresh, 'SELECT ref FROM shop.customers'))?.message).toBe(
        refusal('hk_none', 'dbguard.hash is not installed'),
      );
    } finally {
      await fresh.end();
    }
  }, 120_000);

  it('a dbguard.hash the login role planted (it returns the value) is refused, nothing leaks', async () => {
    // app owns hk_planted, so it may create a schema dbguard and a function that unmasks
    const app = await direct('hk_planted', 'app');
    await app.query(`CREATE SCHEMA dbguard;
      CREATE FUNCTION dbguard.hash(v text, k text) RETURNS text LANGUAGE sql SECURITY DEFINER AS 'SELECT v'`);
    await app.end();
    const c = await proxied('hk_planted');
    try {
      const e = await errorOf(c, 'SELECT ref FROM shop.customers');
      expect(e?.message).toBe(
        refusal(
          'hk_planted',
          'the login role owns dbguard.hash (or is a superuser or a member of its owner) and could replace it',
        ),
      );
      expect(e?.message).not.toContain(REFS[0]);
    } finally {
      await c.end();
    }
    // a DBA's install over it is refused: CREATE OR REPLACE would leave the function in app's hands
    const r = await runDbguard([
      'dbguard',
      'db',
      'install',
      '--upstream',
      url('hk_planted'),
      '--key-id',
      KEY_ID,
      '--key-file',
      keyFile,
    ]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      'dbguard db: schema dbguard belongs to app, function dbguard.hash(text,text) belongs to app, not to postgres: ' +
        'install as that role, or look at what the schema dbguard holds and drop it first\n',
    );
  });

  it('a privilege that would let the login role replace the function or read the keys makes it untrusted', async () => {
    const cases = [
      [
        'GRANT CREATE ON SCHEMA dbguard TO app',
        'REVOKE CREATE ON SCHEMA dbguard FROM app',
        'the login role may create objects in the schema dbguard',
      ],
      [
        'GRANT SELECT ON dbguard.hash_keys TO app',
        'REVOKE SELECT ON dbguard.hash_keys FROM app',
        'the login role can read a table of the schema dbguard (the key table)',
      ],
      [
        'GRANT SELECT (id) ON dbguard.hash_keys TO PUBLIC',
        'REVOKE SELECT (id) ON dbguard.hash_keys FROM PUBLIC',
        'the login role can read a table of the schema dbguard (the key table)',
      ],
      [
        'CREATE ROLE keyholder; ALTER FUNCTION dbguard.hash(text, text) OWNER TO keyholder; GRANT keyholder TO app',
        'ALTER FUNCTION dbguard.hash(text, text) OWNER TO postgres; DROP ROLE keyholder',
        'the login role owns dbguard.hash (or is a superuser or a member of its owner) and could replace it',
      ],
    ] as const;
    for (const [grant, revoke, why] of cases) {
      await adminQuery(cluster, grant, 'hk');
      const c = await proxied('hk');
      try {
        expect((await errorOf(c, 'SELECT ref FROM shop.customers'))?.message, grant).toBe(refusal('hk', why));
      } finally {
        await c.end();
        await adminQuery(cluster, revoke, 'hk');
      }
    }
    const c = await proxied('hk');
    expect((await c.query('SELECT ref FROM shop.customers ORDER BY id')).rows.map((x) => x.ref)).toEqual(
      REFS.map(hmac),
    );
    await c.end();
  });
});
