/**
 * Compatibility matrix, Go family (issue 23 item 1): pgx v5.7.2 (test/compat/go, built by
 * hack/build-test-clients.sh) with its defaults: extended protocol and the statement cache (one query
 * run 6 times is prepared once and reused), as a masked and as an exempt subject.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
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
const SCHEMA = 'compat_go';
const binary = join(import.meta.dirname, '..', '..', '.cache', 'test-clients', 'compat-go');
const matrix = new Matrix('Go');

describe('pgx through the proxy', () => {
  const server = inject('pg');
  let proxy: CompatProxy;
  beforeAll(async () => {
    if (!existsSync(binary))
      throw new Error('pgx test client not built: run `bash hack/build-test-clients.sh`');
    proxy = await startCompatProxy(server, SCHEMA);
  });
  afterAll(async () => {
    await proxy?.sidecar.close();
    matrix.print();
  });

  for (const subject of SUBJECTS) {
    it(`pgx v5.7.2 as the ${subject} subject`, async () => {
      let stdout = '';
      let lines: string[] = [];
      await runRow(matrix, 'pgx v5.7.2 (statement cache)', subject, {
        works: async () => {
          stdout = (await run(binary, [`${proxy.url(subject)}?sslmode=disable`, SCHEMA], { timeout: 60_000 }))
            .stdout;
          lines = stdout.trim().split('\n');
          expect(lines.filter((l) => l.startsWith('error'))).toEqual([]);
        },
        masking: async () => {
          const want = `rows${expectedRows(subject)
            .map((r) => ` | ${r.id},${r.name},${r.email},${r.ssn}`)
            .join('')}`;
          expect(lines.filter((l) => l.startsWith('rows'))).toEqual(Array(6).fill(want));
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
