/**
 * Compatibility matrix, Python family (issue 23 item 1): psycopg 3 (server-bound parameters, a named
 * server-side cursor, COPY … TO STDOUT), psycopg 2 (a named cursor) and SQLAlchemy (MetaData.reflect,
 * inspect().get_columns, an ORM-style select), each as a masked and as an exempt subject
 * (test/compat/python/clients.py; packages pinned in test/requirements.txt).
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import {
  type CompatProxy,
  DENY_MESSAGE,
  expectedRows,
  expectNoLeak,
  Matrix,
  runRow,
  SUBJECTS,
  startCompatProxy,
} from './fixture.js';

const run = promisify(execFile);
const SCHEMA = 'compat_py';
const script = join(import.meta.dirname, 'python', 'clients.py');
const matrix = new Matrix('Python');
const CLIENTS = {
  psycopg3: 'psycopg 3.3.9 (named cursor, COPY TO STDOUT)',
  psycopg2: 'psycopg2-binary 2.9.10 (named cursor)',
  sqlalchemy: 'SQLAlchemy 2.1.9 (reflect, get_columns, select)',
} as const;

describe('Python clients through the proxy', () => {
  const server = inject('pg');
  let proxy: CompatProxy;
  beforeAll(async () => {
    proxy = await startCompatProxy(server, SCHEMA);
  });
  afterAll(async () => {
    await proxy?.sidecar.close();
    matrix.print();
  });

  for (const subject of SUBJECTS) {
    for (const [client, label] of Object.entries(CLIENTS)) {
      it(`${label} as the ${subject} subject`, async () => {
        let stdout = '';
        let out: { rows: unknown[][][]; denied: unknown; after: unknown } = {
          rows: [],
          denied: null,
          after: null,
        };
        const want = expectedRows(subject).map((r) => [r.id, r.name, r.email, r.ssn]);
        await runRow(matrix, label, subject, {
          works: async () => {
            stdout = (await run('python3', [script, proxy.url(subject), SCHEMA, client], { timeout: 60_000 }))
              .stdout;
            out = JSON.parse(stdout);
            expect(out.rows.length).toBeGreaterThan(0);
          },
          masking: async () => {
            // COPY's text rows carry the id as a string
            for (const rows of out.rows) expect(rows.map((r) => [Number(r[0]), ...r.slice(1)])).toEqual(want);
            if (subject === 'masked') expectNoLeak(stdout);
          },
          denial: async () => {
            expect(out.denied).toEqual({ sqlstate: '42501', message: DENY_MESSAGE });
            expect(out.after).toBe(1);
          },
        });
      });
    }
  }
});
