/**
 * The compatibility matrix's shared set-up (issue 23 item 1): one schema per client family, a proxy
 * enforcing a policy with two masking rules and a `DROP *` Deny rule, the two subjects every client
 * connects as (masked: `app`; exempt: `postgres`), the real values the masked subject must never see,
 * and the row each test records. Every family's file prints its rows as a table when it ends.
 */
import { expect } from 'vitest';
import type { CompiledPolicy } from '../../api/compiled.js';
import type { Sidecar } from '../../sidecar/runtime.js';
import { adminQuery } from '../support/admin.js';
import { leakDetector } from '../support/leaks.js';
import type { PgServer } from '../support/pg-cluster.js';
import { compileYaml, startPolicySidecar } from '../support/policy-sidecar.js';

/** Real values; unusual on purpose, so that no client's ordinary output contains them by chance. */
export const REAL = [
  { id: 1, name: 'Qwilda', email: 'qwilda.frobisher@example.org', ssn: '731-58-2046' },
  { id: 2, name: 'Zorvath', email: 'zorvath.mune@example.net', ssn: '864-29-1375' },
];
/** What the masked subject sees: Email keeps the first letter and the domain, Redact shows ****. */
export const MASKED = [
  { id: 1, name: 'Qwilda', email: 'q***@example.org', ssn: '****' },
  { id: 2, name: 'Zorvath', email: 'z***@example.net', ssn: '****' },
];
export const DENY_MESSAGE = 'dbguard: No drops. (rule no-drops)';

const detect = leakDetector(
  REAL.flatMap((r) => [r.email, r.ssn]),
  // the name column is not masked: the part of an email that repeats it is shown on purpose
  { shown: MASKED.flatMap((r) => [r.email, r.name]) },
);
/** Fails the test when `text` (anything the masked subject received) carries a real email or SSN. */
export function expectNoLeak(text: string): void {
  expect(detect(text)).toEqual([]);
}

export type Subject = 'masked' | 'exempt';
export const SUBJECTS: Subject[] = ['masked', 'exempt'];
export function credentials(subject: Subject): { user: string; password: string } {
  return subject === 'masked' ? { user: 'app', password: 'app' } : { user: 'postgres', password: 'postgres' };
}

function policy(schema: string, port: number): CompiledPolicy {
  const text = `
apiVersion: dbguard.io/v1alpha1
kind: DatabasePolicy
metadata: {name: compat, namespace: shop}
spec:
  upstream: {host: 127.0.0.1, port: ${port}, sslmode: disable}
  defaultAction: Allow
  rules: [{name: no-drops, action: Deny, match: {commands: ["DROP *"]}, message: "No drops."}]
---
apiVersion: dbguard.io/v1alpha1
kind: MaskingRule
metadata: {name: pii, namespace: shop}
spec:
  policyRef: {name: compat}
  columns:
    - {table: ${schema}.customers, column: email, strategy: Email}
    - {table: ${schema}.customers, column: ssn, strategy: Redact}
  exemptSubjects: [{kind: DatabaseUser, name: postgres}]
`;
  return compileYaml(text);
}

export interface CompatProxy {
  sidecar: Sidecar;
  host: string;
  port: number;
  /** postgresql://user:password@host:port/app through the proxy */
  url(subject: Subject): string;
}

/**
 * Creates `schema` (customers with a primary key, an index, a sequence, a view and a function, all
 * readable by `app`) and starts a proxy in front of `server` that enforces the matrix's policy on it.
 */
export async function startCompatProxy(server: PgServer, schema: string): Promise<CompatProxy> {
  const rows = REAL.map((r) => `(${r.id}, '${r.name}', '${r.email}', '${r.ssn}')`).join(', ');
  await adminQuery(
    server,
    `DROP SCHEMA IF EXISTS ${schema} CASCADE; CREATE SCHEMA ${schema};
     CREATE TABLE ${schema}.customers (id int PRIMARY KEY, name text NOT NULL, email text, ssn text);
     CREATE INDEX customers_email ON ${schema}.customers (email);
     CREATE SEQUENCE ${schema}.ticket_seq;
     CREATE VIEW ${schema}.customer_names AS SELECT id, name FROM ${schema}.customers;
     CREATE FUNCTION ${schema}.double_it(x int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT x * 2';
     CREATE TABLE ${schema}.victim (id int);
     INSERT INTO ${schema}.customers VALUES ${rows};
     GRANT USAGE ON SCHEMA ${schema} TO app; GRANT ALL ON ALL TABLES IN SCHEMA ${schema} TO app;
     GRANT ALL ON ALL SEQUENCES IN SCHEMA ${schema} TO app;`,
  );
  const sidecar = await startPolicySidecar(server, policy(schema, server.port));
  const { host, port } = sidecar.proxy;
  return {
    sidecar,
    host,
    port,
    url(subject) {
      const c = credentials(subject);
      return `postgresql://${c.user}:${c.password}@${host}:${port}/app`;
    },
  };
}

/** One row of the matrix: a client (with its version) as one subject; each check passed or not. */
export interface MatrixRow {
  client: string;
  subject: Subject;
  works: boolean;
  masking: boolean;
  denial: boolean;
  note?: string;
}

/** Collects one family's rows and prints them as a table (called from the family's afterAll). */
export class Matrix {
  readonly rows: MatrixRow[] = [];
  constructor(private readonly family: string) {}
  add(row: MatrixRow): void {
    this.rows.push(row);
  }
  print(): void {
    const mark = (b: boolean) => (b ? 'pass' : 'FAIL');
    const head = `| ${this.family} client | subject | works | masked values only | DROP -> 42501, session usable |`;
    const lines = [head, '|---|---|---|---|---|'];
    for (const r of this.rows) {
      lines.push(
        `| ${r.client} | ${r.subject} | ${mark(r.works)} | ${r.subject === 'exempt' ? `${mark(r.masking)} (sees real)` : mark(r.masking)} | ${mark(r.denial)} |`,
      );
    }
    console.log(`\ncompatibility matrix (${this.family})\n${lines.join('\n')}\n`);
  }
}

/**
 * Runs one row's three checks in order (each an assertion-throwing function), records which passed,
 * and rethrows the first failure so the test fails with the client's own error.
 */
export async function runRow(
  matrix: Matrix,
  client: string,
  subject: Subject,
  checks: { works: () => Promise<void>; masking: () => Promise<void>; denial: () => Promise<void> },
): Promise<void> {
  const errors: unknown[] = [];
  const ok = async (f: () => Promise<void>) => {
    try {
      await f();
      return true;
    } catch (e) {
      errors.push(e);
      return false;
    }
  };
  const works = await ok(checks.works);
  const masking = await ok(checks.masking);
  const denial = await ok(checks.denial);
  matrix.add({ client, subject, works, masking, denial });
  if (errors.length > 0) throw errors[0];
}

/** The rows `subject` must see from customers (id order). */
export function expectedRows(subject: Subject) {
  return subject === 'masked' ? MASKED : REAL;
}
