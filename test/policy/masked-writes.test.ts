/**
 * Issue 24: a masked subject's writes never store masked values. Each write form is judged as a
 * masked subject on a real catalog, what the engine forwards runs on the real server (with
 * parameters where the form has them), and the real values are then read back over the table
 * owner's own connection: they must be exactly what was seeded, unless the statement wrote a new,
 * genuine value.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, beforeEach, describe, expect, inject, test } from 'vitest';
import type { CompiledPolicy } from '../../api/compiled.js';
import type { Decision } from '../../policy/decision.js';
import type { Identity } from '../../policy/identity.js';
import { judge } from '../../policy/judge.js';
import { guardErrorFields } from '../../policy/masked-writes.js';
import { initParser } from '../../policy/parser.js';
import { installHashKeys } from '../support/hash-key.js';
import { exempt, loadCatalog, masked, maskingPolicy } from './fixtures.js';

const DB = 'masked_writes_' + process.pid;
const RULE = 'shop/customer-pii';

const SEED = `
delete from shop.orders; delete from shop.customers; delete from shop.staging;
insert into shop.customers values
  (1, 'Alice Smith', 'alice.smith@example.org', '123-45-6789', '4111111111111111', 98765.43, '1984-07-19', 'CUST-REF-0001', 'Liechtenstein'),
  (2, 'Bob Jones', 'bob.jones@example.com', '987-65-4321', '5500005555555559', 12345.67, '1975-11-02', 'CUST-REF-0002', 'Kazakhstan'),
  (3, 'No Mail', null, null, null, null, null, null, null);
insert into shop.orders values (10, 1, 5, 'n1'), (11, 2, 7, 'n2');
`;

const SETUP = `
create schema shop;
create table shop.customers (id int primary key, name text, email text, ssn text, card_number text,
  salary numeric(10,2), birth_date date, customer_ref text, country text);
create table shop.orders (id int primary key, customer_id int, total int, note text);
create sequence shop.refs;
create function shop.summary(shop.customers) returns text language sql immutable as 'select $1.name || $1.ssn';
create table shop.staging (id int primary key, name text, email text, ssn text, card_number text,
  salary numeric(10,2), birth_date date, customer_ref text, country text);
${SEED}
`;

/** The seeded rows as the table owner reads them (every column as text). */
let REAL: string[][];
const REAL_SQL = 'select * from shop.customers order by id';

let dbUrl: string;
let owner: pg.Client;
const policy: CompiledPolicy = maskingPolicy('shop');

function connect(): pg.Client {
  return new pg.Client({ connectionString: dbUrl, types: { getTypeParser: () => (v: string) => v } as any });
}

async function realRows(): Promise<string[][]> {
  return (await owner.query({ text: REAL_SQL, rowMode: 'array' })).rows;
}

interface Outcome {
  decision: Decision;
  /** the error the client sees (after the proxy's mapping of a run-time guard failure) */
  error?: { code: string; message: string };
  rows?: unknown[][];
}

async function decide(sql: string, who: Identity, c: pg.Client): Promise<Decision> {
  const cat = await loadCatalog(c, policy);
  return judge(sql, { identity: who, database: DB, searchPath: cat.searchPath, catalog: cat }, policy);
}

/** Judge as `who`, run what the engine forwards (with `values` as parameters), report the result. */
async function run(sql: string, values?: unknown[], who: Identity = masked): Promise<Outcome> {
  const c = connect();
  await c.connect();
  try {
    const decision = await decide(sql, who, c);
    if (decision.kind === 'deny')
      return { decision, error: { code: decision.sqlstate!, message: decision.message! } };
    try {
      const r = await c.query({ text: decision.sql, values, rowMode: 'array' });
      const last = Array.isArray(r) ? r[r.length - 1] : r;
      return { decision, rows: last.rows };
    } catch (e) {
      const err = e as pg.DatabaseError;
      const f = guardErrorFields(
        new Map([
          ['C', err.code ?? ''],
          ['M', err.message],
        ]),
      );
      return { decision, error: { code: f.get('C')!, message: f.get('M')! } };
    }
  } finally {
    await c.end();
  }
}

const refused = (column: string) => `dbguard: cannot write ${column} from a masked value (rule ${RULE})`;
const writtenBack = (column: string) =>
  `dbguard: cannot write ${column} from a masked value: the new value is this row's masked value (rule ${RULE})`;

beforeAll(async () => {
  await initParser();
  const { url } = inject('pg');
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  await admin.query(`drop database if exists ${DB}`);
  await admin.query(`create database ${DB} owner app`);
  await admin.query(`alter database ${DB} set search_path = shop, public`);
  await admin.end();
  // the fixture masks customer_ref with Hash, whose keyed function `dbguard db install` creates
  await installHashKeys(inject('pg'), DB, { 'shop/pii-salt/salt': 'masked-writes-key' });
  const u = new URL(url);
  u.username = 'app';
  u.password = 'app';
  u.pathname = '/' + DB;
  dbUrl = u.toString();
  owner = connect();
  await owner.connect();
  await owner.query(SETUP);
  REAL = await realRows();
}, 60_000);

beforeEach(async () => {
  await owner.query(SEED);
});

afterAll(async () => {
  await owner?.end();
  const c = new pg.Client({ connectionString: inject('pg').url });
  await c.connect();
  await c.query(`drop database if exists ${DB} with (force)`);
  await c.end();
});

/** [statement, the column named in the refusal] */
const READS_MASKED: [string, string][] = [
  // the reproductions
  ['update customers set email = email, ssn = ssn where id = 1', 'shop.customers.email'],
  ['update customers set email = lower(email) where id = 1', 'shop.customers.email'],
  // self-reference in every spelling
  ['update customers set ssn = ssn where id = 1', 'shop.customers.ssn'],
  ["update customers c set email = c.email || '' where c.id = 1", 'shop.customers.email'],
  ['update customers set email = shop.customers.email where id = 1', 'shop.customers.email'],
  ['update customers set (email, ssn) = (email, ssn) where id = 1', 'shop.customers.email'],
  [
    'update customers set (email, ssn) = (select email, ssn from customers c2 where c2.id = 2) where id = 1',
    'shop.customers.email',
  ],
  [
    'update customers set email = (select c2.email from customers c2 where c2.id = 2) where id = 1',
    'shop.customers.email',
  ],
  [
    "update customers set email = case when ssn = '****' then 'x@y.org' else 'z@y.org' end where id = 1",
    'shop.customers.email',
  ],
  ['update customers set salary = salary + 1 where id = 1', 'shop.customers.salary'],
  ['update customers set birth_date = birth_date where id = 1', 'shop.customers.birth_date'],
  [
    'update customers set customer_ref = customer_ref, country = country where id = 1',
    'shop.customers.customer_ref',
  ],
  // a masked value into an unmasked column (masked before: now refused, so the column keeps its data)
  ['update customers set name = ssn where id = 1', 'shop.customers.name'],
  // UPDATE ... FROM a masked source, directly, through a derived table, through a CTE
  ['update customers t set email = s.email from customers s where s.id = t.id', 'shop.customers.email'],
  ['update orders o set note = c.ssn from customers c where c.id = o.customer_id', 'shop.orders.note'],
  [
    'update orders o set note = x.s from (select id, ssn as s from customers) x where x.id = o.customer_id',
    'shop.orders.note',
  ],
  [
    'update orders o set note = x.s from (select * from customers) x(i, n, s) where x.i = o.customer_id',
    'shop.orders.note',
  ],
  [
    'with src as (select id, email from customers) update customers set email = src.email from src where src.id = customers.id',
    'shop.customers.email',
  ],
  [
    'update orders o set note = j.ssn from orders o2 join customers j on j.id = o2.customer_id where o2.id = o.id',
    'shop.orders.note',
  ],
  // MERGE
  [
    'merge into customers t using customers s on t.id = s.id when matched then update set email = s.email',
    'shop.customers.email',
  ],
  [
    'merge into customers t using (select id, email from customers) s on t.id = s.id when matched then update set email = s.email',
    'shop.customers.email',
  ],
  [
    'merge into customers t using orders o on t.id = o.customer_id when matched then update set ssn = t.ssn',
    'shop.customers.ssn',
  ],
  [
    'merge into customers t using (select id + 100 as id, email from customers) s on t.id = s.id when not matched then insert (id, email) values (s.id, s.email)',
    'shop.customers.email',
  ],
  [
    'merge into orders t using customers s on t.id = s.id when not matched then insert values (s.id + 100, s.id, 1, s.ssn)',
    'shop.orders (column 4)',
  ],
  // INSERT ... ON CONFLICT DO UPDATE using the existing row
  [
    "insert into customers (id, name) values (1, 'x') on conflict (id) do update set email = customers.email",
    'shop.customers.email',
  ],
  [
    'insert into customers as c (id) values (1) on conflict (id) do update set email = lower(c.email)',
    'shop.customers.email',
  ],
  [
    "insert into customers (id, name) values (1, 'x') on conflict (id) do update set name = customers.ssn",
    'shop.customers.name',
  ],
  // INSERT ... SELECT / VALUES from a masked table
  ['insert into customers (id, email) select id + 100, email from customers', 'shop.customers.email'],
  ['insert into orders select 100 + id, id, salary, ssn from customers', 'shop.orders (column 3)'],
  [
    'insert into orders (id, note) select id + 100, x from (select id, ssn x from customers) s',
    'shop.orders.note',
  ],
  ['insert into orders (id, note) select 100, (select max(ssn) from customers)', 'shop.orders.note'],
  ['insert into orders (id, note) values (100, (select ssn from customers limit 1))', 'shop.orders.note'],
  [
    "insert into orders (id, note) select 1, 'x' union all select id + 100, email from customers",
    'shop.orders.note',
  ],
  ['insert into orders (id, note) select id + 100, c::text from customers c', 'shop.orders.note'],
  ['insert into staging select * from customers', 'shop.staging (column 3)'],
  // attribute notation: c.summary is summary(c), a function of the whole (masked) row
  ['insert into orders (id, note) select id + 100, c.summary from customers c', 'shop.orders.note'],
  [
    'insert into orders (id, note) select * from (select id + 100, email from customers) s',
    'shop.orders.note',
  ],
  [
    'with recursive r(n, s) as (select 1, ssn from customers where id = 1 union all select n + 1, s from r where n < 2) insert into orders (id, note) select n + 100, s from r',
    'shop.orders.note',
  ],
  // writable CTEs
  [
    'with u as (update customers set email = email where id = 1 returning id) select * from u',
    'shop.customers.email',
  ],
  [
    "with d as (update customers set name = 'n' where id = 1 returning email) update orders set note = d.email from d",
    'shop.orders.note',
  ],
  [
    'with d as (delete from customers where id = 1 returning *) insert into customers select * from d',
    'shop.customers.email',
  ],
  [
    'with d as (delete from customers where id = 1 returning *) insert into staging select * from d',
    'shop.staging (column 3)',
  ],
  // SQL-level PREPARE and EXPLAIN ANALYZE run the write too
  ['prepare w as update customers set email = email where id = $1', 'shop.customers.email'],
  ['explain analyze update customers set ssn = ssn where id = 1', 'shop.customers.ssn'],
];

describe('a statement that would store a value read from a masked column is refused', () => {
  test.each(READS_MASKED)('%s', async (sql, column) => {
    const o = await run(sql);
    expect(o.decision.kind, o.decision.sql).toBe('deny');
    expect(o.error).toEqual({ code: '42501', message: refused(column) });
    expect(await realRows()).toEqual(REAL);
    // the subject named in the rule's exemptSubjects writes real values: its statements run unchanged
    const ex = await decide(sql, exempt, owner);
    expect(ex.kind).toBe('allow');
    expect(ex.sql).toBe(sql);
  });
});

test('writes of masked columns the guard cannot check are refused, not passed', async () => {
  for (const [sql, why] of [
    [
      "update customers set (email, ssn) = (select 'x@y.org', 'z') where id = 1",
      'a multiple-column assignment from a sub-select',
    ],
    [
      "update customers set email[1] = 'x' where id = 1",
      'an assignment to part of masked column shop.customers.email',
    ],
    [
      "update customers set customer_ref = 'C-' || nextval('shop.refs') where id = 1",
      'the new value of shop.customers.customer_ref calls nextval()',
    ],
  ] as const) {
    const o = await run(sql);
    expect(o.error?.code, sql).toBe('42501');
    expect(o.error?.message, sql).toMatch(
      new RegExp(
        `^dbguard: cannot check a write of masked data: ${why.replace(/[.*]/g, '\\$&')}.* \\(rule ${RULE}\\)$`,
      ),
    );
  }
  expect(await realRows()).toEqual(REAL);
});

describe('writes that read no masked value keep working', () => {
  test('a WHERE on a masked column sees the masked value; nothing masked is stored', async () => {
    const o = await run(
      "update customers set name = 'renamed' where email = 'a***@example.org' returning email, ssn",
    );
    expect(o.error).toBeUndefined();
    expect(o.rows).toEqual([['a***@example.org', '****']]);
    const rows = await realRows();
    expect(rows[0]).toEqual(['1', 'renamed', ...REAL[0]!.slice(2)]);
    expect(rows.slice(1)).toEqual(REAL.slice(1));
    // and a predicate on the real value matches nothing (no oracle)
    const none = await run("update customers set name = 'x' where ssn = '123-45-6789' returning id");
    expect(none.rows).toEqual([]);
  });

  test('genuine new values of masked columns are stored, as literals and as parameters', async () => {
    const a = await run(
      "update customers set email = 'new.alice@example.org', ssn = '111-11-1111' where id = 1",
    );
    expect(a.error).toBeUndefined();
    expect(a.decision.kind).toBe('mask');
    const b = await run('update customers set (email, card_number) = ($1, $2) where id = $3', [
      'new.bob@example.com',
      '4000000000000002',
      2,
    ]);
    expect(b.error).toBeUndefined();
    const c = await run('update customers set email = $1, salary = default where id = 3', [
      'first@example.net',
    ]);
    expect(c.error).toBeUndefined();
    // values of another type, assigned as before (an integer into text, a timestamp into a date)
    const t = await run(
      "update customers set ssn = 42, birth_date = timestamp '2001-02-03 04:05' where id = 3",
    );
    expect(t.error).toBeUndefined();
    expect((await realRows())[2]!.slice(3, 7)).toEqual(['42', null, null, '2001-02-03']);
    // every strategy's column, parameters typed by the server from the column
    const d = await run(
      'update customers set salary = $1, birth_date = $2, country = $3, customer_ref = $4 where id = 2',
      ['100.50', '1990-05-05', 'FR', 'REF-9'],
    );
    expect(d.error).toBeUndefined();
    const rows = await realRows();
    expect(rows[1]!.slice(5)).toEqual(['100.50', '1990-05-05', 'REF-9', 'FR']);
    expect(rows[0]!.slice(2, 4)).toEqual(['new.alice@example.org', '111-11-1111']);
    expect([rows[1]![2], rows[1]![4]]).toEqual(['new.bob@example.com', '4000000000000002']);
    expect(rows[2]![2]).toBe('first@example.net');
  });

  test('unmasked columns copied from a masked table, and rows chosen by masked predicates', async () => {
    const m = await run(
      "merge into customers t using orders o on t.id = o.customer_id when matched and t.ssn like '*%' then update set name = 'm'",
    );
    expect(m.error).toBeUndefined();
    const o = await run(
      "insert into orders (id, customer_id, note) select 100 + id, id, name from customers where ssn = '****' and id < 3",
    );
    expect(o.error).toBeUndefined();
    const u = await run(
      "update orders o set note = c.name from customers c where c.id = o.customer_id and c.email like 'a%'",
    );
    expect(u.error).toBeUndefined();
    const notes = await owner.query('select id, note from shop.orders order by id');
    expect(notes.rows).toEqual([
      { id: '10', note: 'm' },
      { id: '11', note: 'n2' },
      { id: '101', note: 'm' },
      { id: '102', note: 'm' },
    ]);
    const rows = await realRows();
    expect(rows.map((r) => r.slice(2))).toEqual(REAL.map((r) => r.slice(2)));
  });

  test('new rows with values of their own, and copies into new tables', async () => {
    const i = await run(
      "insert into customers (id, name, email, ssn) values (50, 'New', 'new@example.org', '555-55-5555') returning email",
    );
    expect(i.rows).toEqual([['n***@example.org']]);
    const ct = await run('create temp table mine as select * from customers; select count(*) from mine');
    expect(ct.error).toBeUndefined();
    expect((await owner.query('select email from shop.customers where id = 50')).rows).toEqual([
      { email: 'new@example.org' },
    ]);
  });
});

describe('writing back the masked form that was shown fails loudly (an ORM saving every column)', () => {
  /** [column, the value the masked subject reads for row 1] */
  const SHOWN: [string, string | null][] = [
    ['email', 'a***@example.org'],
    ['ssn', '****'],
    ['card_number', '************1111'],
    ['salary', null],
    ['birth_date', '1984-01-01'],
    ['country', 'XX'],
  ];

  test.each(SHOWN)('%s: as a parameter and as a literal', async (column, shown) => {
    const p = await run(`update customers set name = $1, ${column} = $2 where id = $3`, [
      'Changed',
      shown,
      1,
    ]);
    expect(p.error).toEqual({ code: '42501', message: writtenBack(`shop.customers.${column}`) });
    const literal = shown === null ? 'null' : `'${shown}'`;
    const l = await run(`update customers set name = 'Changed', ${column} = ${literal} where id = 1`);
    expect(l.error).toEqual({ code: '42501', message: writtenBack(`shop.customers.${column}`) });
    expect(await realRows()).toEqual(REAL);
  });

  /** Every spelling of a SET item the guard must wrap exactly: $1 is row 1's email. */
  const SPELLINGS = [
    "update customers set name = 'x', email = /* a */ $1 /* b */ where id = 1",
    "update customers set email = case when $1::text is distinct from 'q' then $1 else 'z@z.org' end where id = 1",
    'update customers set email = ($1) where id = 1 returning email',
    "update customers set (name, email) = row('n', $1) where id = 1",
    "update customers set (email, name) = ($1, 'n') where id = 1",
    'with u as (update customers set email = $1 where id = 1 returning id) select count(*) from u',
    'with u as (update customers set email = $1 returning id) select count(*) from u',
    'merge into customers t using (values (1)) v(id) on t.id = v.id when matched then update set email = $1 when not matched then insert (id) values (v.id)',
    'insert into customers as c (id, email) values (1, $1) on conflict (id) do update set email = excluded.email where c.id = 1',
    'prepare pw(text) as update customers set email = $1 where id = 1; execute pw($1)',
  ];

  test.each(SPELLINGS)('%s', async (sql) => {
    const multi = sql.startsWith('prepare');
    const text = multi ? sql.replace('execute pw($1)', "execute pw('a***@example.org')") : sql;
    const o = await run(text, multi ? undefined : ['a***@example.org']);
    expect(o.error, o.decision.sql).toEqual({ code: '42501', message: writtenBack('shop.customers.email') });
    expect(await realRows()).toEqual(REAL);
    const genuine = multi ? sql.replace('execute pw($1)', "execute pw('fresh@example.org')") : sql;
    const g = await run(genuine, multi ? undefined : ['fresh@example.org']);
    expect(g.error, g.decision.sql).toBeUndefined();
    expect((await realRows())[0]![2]).toBe('fresh@example.org');
  });

  test('Hash: the pseudonym written back', async () => {
    const shown = (await run('select customer_ref from customers where id = 1')).rows![0]![0];
    expect(shown).toMatch(/^[0-9a-f]{64}$/);
    const p = await run('update customers set customer_ref = $1 where id = 1', [shown]);
    expect(p.error).toEqual({ code: '42501', message: writtenBack('shop.customers.customer_ref') });
    expect(await realRows()).toEqual(REAL);
  });

  test("another row's masked form, and NULL over NULL, are ordinary writes", async () => {
    // row 3 has no email: NULL is both its value and its masked form, so writing NULL loses nothing
    const n = await run('update customers set email = $1 where id = 3', [null]);
    expect(n.error).toBeUndefined();
    expect(await realRows()).toEqual(REAL);
  });

  test('ON CONFLICT DO UPDATE SET col = EXCLUDED.col (an ORM upsert)', async () => {
    const sql =
      'insert into customers (id, name, email, ssn) values ($1, $2, $3, $4) on conflict (id) do update set name = excluded.name, email = excluded.email, ssn = excluded.ssn';
    const o = await run(sql, [1, 'Changed', 'a***@example.org', '****']);
    expect(o.error).toEqual({ code: '42501', message: writtenBack('shop.customers.email') });
    expect(await realRows()).toEqual(REAL);
    const ok = await run(sql, [1, 'Changed', 'alice@new.example', '222-22-2222']);
    expect(ok.error).toBeUndefined();
    expect((await realRows())[0]!.slice(1, 4)).toEqual(['Changed', 'alice@new.example', '222-22-2222']);
  });

  test('MERGE from client-supplied rows', async () => {
    const o = await run(
      "merge into customers t using (values (1, 'a***@example.org')) v(id, email) on t.id = v.id when matched then update set email = v.email",
    );
    expect(o.error).toEqual({ code: '42501', message: writtenBack('shop.customers.email') });
    expect(await realRows()).toEqual(REAL);
  });

  test('a multi-row UPDATE fails as a whole when one row gets its masked form back', async () => {
    const o = await run(
      "update customers set email = case id when 1 then 'a***@example.org' else 'fresh@example.org' end",
    );
    expect(o.error?.code).toBe('42501');
    expect(await realRows()).toEqual(REAL);
  });

  test('a masked COPY TO, loaded back with COPY FROM, never replaces real values', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dbguard-copy-'));
    try {
      const file = join(dir, 'customers.csv');
      const psql = (sql: string, input?: string) =>
        execFileSync('psql', [dbUrl, '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-c', sql], {
          encoding: 'utf8',
          input,
          stdio: ['pipe', 'pipe', 'pipe'],
        });
      const out = await decide('copy customers to stdout with (format csv)', masked, owner);
      expect(out.kind).toBe('mask');
      writeFileSync(file, psql(out.sql));
      expect(readFileSync(file, 'utf8')).toContain('a***@example.org');
      // straight back into the table: new rows only, the existing keys refuse them
      const back = await decide('copy customers from stdin with (format csv)', masked, owner);
      expect(back.kind).not.toBe('deny');
      expect(() => psql(back.sql, readFileSync(file, 'utf8'))).toThrow(/duplicate key/);
      // into a staging table, then UPDATE ... FROM staging: the masked forms are refused
      psql(
        (await decide('copy staging from stdin with (format csv)', masked, owner)).sql,
        readFileSync(file, 'utf8'),
      );
      const o = await run(
        'update customers c set name = s.name, email = s.email, ssn = s.ssn, card_number = s.card_number from staging s where s.id = c.id',
      );
      expect(o.error).toEqual({ code: '42501', message: writtenBack('shop.customers.email') });
      expect(await realRows()).toEqual(REAL);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

test('guardErrorFields maps only the guard failure', () => {
  const f = new Map([
    ['C', '22P02'],
    ['M', `invalid input syntax for type integer: "${writtenBack('shop.customers.email')}"`],
    ['P', '12'],
  ]);
  expect(Object.fromEntries(guardErrorFields(f))).toEqual({
    C: '42501',
    M: writtenBack('shop.customers.email'),
  });
  const other = new Map([
    ['C', '22P02'],
    ['M', 'invalid input syntax for type integer: "abc"'],
  ]);
  expect(Object.fromEntries(guardErrorFields(new Map(other)))).toEqual(Object.fromEntries(other));
});
