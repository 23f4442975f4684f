/**
 * psql's describe commands for a masked subject, through the proxy (issue 23): an analyst's first command
 * is `\d table`. Each command that reads the catalog must work, and none may show a real value.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { Sidecar } from '../../sidecar/runtime.js';
import { adminQuery } from '../support/admin.js';
import { leakDetector } from '../support/leaks.js';
import { compileYaml, startPolicySidecar } from '../support/policy-sidecar.js';

const SCHEMA = 'psqld';
const SECRETS = ['ada.qzwx@example.org', '123-45-6789'];
const leaks = leakDetector(SECRETS, { shown: ['a***@example.org'] });

describe('psql describe commands for a masked subject', () => {
  const server = inject('pg');
  let sidecar: Sidecar;

  beforeAll(async () => {
    await adminQuery(
      server,
      `DROP SCHEMA IF EXISTS ${SCHEMA} CASCADE; CREATE SCHEMA ${SCHEMA} AUTHORIZATION app;
       SET ROLE app;
       CREATE TABLE ${SCHEMA}.customers (id int PRIMARY KEY, email text UNIQUE, ssn text NOT NULL);
       CREATE INDEX customers_ssn ON ${SCHEMA}.customers (ssn);
       CREATE STATISTICS ${SCHEMA}.customers_st (dependencies) ON email, ssn FROM ${SCHEMA}.customers;
       CREATE VIEW ${SCHEMA}.ids AS SELECT id FROM ${SCHEMA}.customers;
       CREATE SEQUENCE ${SCHEMA}.seq;
       CREATE FUNCTION ${SCHEMA}.plus1(int) RETURNS int LANGUAGE sql AS 'SELECT $1 + 1';
       INSERT INTO ${SCHEMA}.customers VALUES (1, 'ada.qzwx@example.org', '123-45-6789');
       ANALYZE ${SCHEMA}.customers;
       RESET ROLE;`,
    );
    const policy = compileYaml(`
apiVersion: dbguard.io/v1alpha1
kind: DatabasePolicy
metadata: {name: psqld, namespace: shop}
spec:
  upstream: {host: 127.0.0.1, port: ${server.port}, sslmode: disable}
  defaultAction: Allow
---
apiVersion: dbguard.io/v1alpha1
kind: MaskingRule
metadata: {name: pii, namespace: shop}
spec:
  policyRef: {name: psqld}
  columns:
    - {table: ${SCHEMA}.customers, column: email, strategy: Email}
    - {table: ${SCHEMA}.customers, column: ssn, strategy: Redact}
`);
    sidecar = await startPolicySidecar(server, policy);
  });

  afterAll(async () => {
    await sidecar?.close();
  });

  const psql = (command: string) =>
    promisify(execFile)('psql', [
      '-X',
      '-v',
      'ON_ERROR_STOP=1',
      '-c',
      command,
      `postgres://app:app@${sidecar.proxy.host}:${sidecar.proxy.port}/app`,
    ]);

  it.each([
    [`\\d ${SCHEMA}.customers`, 'customers_ssn'],
    [`\\d+ ${SCHEMA}.customers`, 'customers_st'],
    [`\\d ${SCHEMA}.ids`, 'id'],
    [`\\d+ ${SCHEMA}.ids`, 'View definition'],
    ['\\dS+ pg_class', 'relname'],
    [`\\dt ${SCHEMA}.*`, 'customers'],
    [`\\di ${SCHEMA}.*`, 'customers_ssn'],
    [`\\dv ${SCHEMA}.*`, 'ids'],
    [`\\ds ${SCHEMA}.*`, 'seq'],
    [`\\df ${SCHEMA}.*`, 'plus1'],
    [`\\sf ${SCHEMA}.plus1`, 'SELECT $1 + 1'],
    [`\\sv ${SCHEMA}.ids`, 'customers'],
    [`\\dX ${SCHEMA}.*`, 'customers_st'],
    [`\\dn ${SCHEMA}`, SCHEMA],
    ['\\du app', 'app'],
    ['\\l app', 'app'],
    [`\\dp ${SCHEMA}.*`, 'customers'],
  ])('%s works and shows no real value', async (command, expected) => {
    const { stdout } = await psql(command);
    expect(stdout).toContain(expected);
    expect(leaks(stdout)).toEqual([]);
  });

  it('the statistics with values stay refused', async () => {
    const err = await psql(
      `SELECT most_common_vals::text FROM pg_stats WHERE schemaname = '${SCHEMA}' AND tablename = 'customers'`,
    ).catch((e: { stderr: string }) => e.stderr);
    expect(String(err)).toMatch(/dbguard: .*pg_stats/);
    expect(leaks(String(err))).toEqual([]);
  });
});
