/**
 * Compatibility matrix, Java family (issue 23 item 1): pgjdbc 42.7.4 (Maven Central, built by
 * hack/build-test-clients.sh) runs test/compat/java/Compat.java: DatabaseMetaData (tables, columns,
 * primary keys, indexes, functions, table privileges, type info), a PreparedStatement executed 7 times
 * with prepareThreshold=5 (a named server-side statement from the 5th on), ResultSetMetaData
 * getColumnName/getTableName on masked results, a batch, and a refused DROP.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import {
  type CompatProxy,
  credentials,
  DENY_MESSAGE,
  expectedRows,
  expectNoLeak,
  Matrix,
  runRow,
  SUBJECTS,
  startCompatProxy,
} from './fixture.js';

const run = promisify(execFile);
const SCHEMA = 'compat_java';
const PGJDBC = '42.7.4';
const cache = join(import.meta.dirname, '..', '..', '.cache', 'test-clients');
const jar = join(cache, `postgresql-${PGJDBC}.jar`);
const matrix = new Matrix('Java');

describe('pgjdbc through the proxy', () => {
  const server = inject('pg');
  let proxy: CompatProxy;
  beforeAll(async () => {
    if (!existsSync(join(cache, 'java', 'Compat.class'))) {
      throw new Error('pgjdbc test client not built: run `bash hack/build-test-clients.sh` (make test does)');
    }
    proxy = await startCompatProxy(server, SCHEMA);
  });
  afterAll(async () => {
    await proxy?.sidecar.close();
    matrix.print();
  });

  for (const subject of SUBJECTS) {
    it(`pgjdbc ${PGJDBC} as the ${subject} subject`, async () => {
      let lines: string[] = [];
      let stdout = '';
      const { user, password } = credentials(subject);
      await runRow(matrix, `pgjdbc ${PGJDBC}`, subject, {
        works: async () => {
          const url = `jdbc:postgresql://${proxy.host}:${proxy.port}/app?sslmode=disable`;
          stdout = (
            await run(
              'java',
              ['-cp', `${jar}:${join(cache, 'java')}`, 'Compat', url, user, password, SCHEMA],
              {
                timeout: 60_000,
              },
            )
          ).stdout;
          lines = stdout.trim().split('\n');
          const meta = Object.fromEntries(
            lines.filter((l) => l.startsWith('meta ')).map((l) => [l.split(' ')[1], Number(l.split(' ')[2])]),
          );
          expect(meta.getTables).toBeGreaterThanOrEqual(3); // customers, victim, customer_names, ticket_seq, index
          expect(meta.getColumns).toBe(4);
          expect(meta.getPrimaryKeys).toBe(1);
          expect(meta.getIndexInfo).toBe(2);
          expect(meta.getFunctions).toBe(1);
          expect(meta.getTablePrivileges).toBeGreaterThan(0);
          expect(meta.getTypeInfo).toBeGreaterThan(10);
          expect(lines).toContain('batch 2');
        },
        masking: async () => {
          // Known gap (docs/tested-clients.md): a masked column comes back as an expression of the
          // rewritten query, so its RowDescription has no table OID and getTableName is "" for it
          const heads =
            subject === 'masked'
              ? 'id/customers name/customers email/ ssn/'
              : 'id/customers name/customers email/customers ssn/customers';
          const want = `rows ${heads}${expectedRows(subject)
            .map((r) => ` | ${r.id},${r.name},${r.email},${r.ssn}`)
            .join('')}`;
          const rows = lines.filter((l) => l.startsWith('rows '));
          expect(rows).toEqual(Array(7).fill(want));
          if (subject === 'masked') expectNoLeak(stdout);
        },
        denial: async () => {
          expect(lines).toContain(`denied 42501 ${DENY_MESSAGE}`);
          expect(lines).toContain('after 1');
        },
      });
    });
  }
});
