/**
 * Contract §7: a refused statement's audit event says why (`reason`, a stable code) and what the client
 * was told (`message`, no values), and `dbguard_denied_queries_total` carries the same `reason` label,
 * so an SRE can alert on policy blocks apart from parse errors or masking refusals.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { Sidecar } from '../../sidecar/runtime.js';
import { adminQuery } from '../support/admin.js';
import { compileYaml, startPolicySidecar } from '../support/policy-sidecar.js';

const SSN = '123-45-6789';

describe('denial reasons in the audit trail and the metrics', () => {
  const server = inject('pg');
  let sidecar: Sidecar;
  let dir: string;
  const events = () =>
    fs
      .readFileSync(path.join(dir, 'audit.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l));

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dbguard-reasons-'));
    await adminQuery(
      server,
      `DROP TABLE IF EXISTS reason_people; CREATE TABLE reason_people (id int PRIMARY KEY, ssn text);
       INSERT INTO reason_people VALUES (1, '${SSN}'); GRANT ALL ON reason_people TO app;`,
    );
    const policy = compileYaml(`
apiVersion: dbguard.io/v1alpha1
kind: DatabasePolicy
metadata: {name: reasons, namespace: shop}
spec:
  upstream: {host: 127.0.0.1, port: ${server.port}, sslmode: disable}
  defaultAction: Allow
  rules: [{name: no-drops, action: Deny, match: {commands: ["DROP *"]}, message: "No drops."}]
---
apiVersion: dbguard.io/v1alpha1
kind: MaskingRule
metadata: {name: pii, namespace: shop}
spec:
  policyRef: {name: reasons}
  columns: [{table: reason_people, column: ssn, strategy: Redact}]
`);
    sidecar = await startPolicySidecar(server, policy, {
      auditLog: path.join(dir, 'audit.jsonl'),
      metricsListen: '127.0.0.1:0',
    });
  });

  afterAll(async () => {
    await sidecar?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('each refusal has its own reason and message; an allowed statement has neither', async () => {
    const c = new pg.Client({ ...sidecar.proxy, user: 'app', password: 'app', database: 'app' });
    await c.connect();
    const refused = async (sql: string) =>
      c.query(sql).then(
        () => 'ran',
        (e: { code: string }) => e.code,
      );
    expect(await refused('SELECT ssn FROM reason_people')).toBe('ran');
    expect(await refused('DROP TABLE reason_people')).toBe('42501');
    expect(await refused('SELECT most_common_vals::text FROM pg_stats')).toBe('42501');
    expect(await refused('UPDATE reason_people SET ssn = ssn WHERE id = 1')).toBe('42501');
    expect(await refused(`SELEC '${SSN}' FROM reason_people`)).toBe('42601');
    await c.end();
    await sidecar.audit!.flush();

    const q = events().filter((e) => e.event === 'query');
    const by = (command: string) => q.filter((e) => e.statement.command === command);
    expect(by('SELECT')[0]).toMatchObject({ decision: 'mask', reason: null, message: null });
    expect(by('DROP TABLE')[0]).toMatchObject({
      decision: 'deny',
      reason: 'rule',
      message: 'dbguard: No drops. (rule no-drops)',
    });
    const stats = q.find((e) => e.statement.objects.includes('pg_catalog.pg_stats'));
    expect(stats).toMatchObject({ decision: 'deny', reason: 'cannot_prove_masked' });
    expect(stats.message).toMatch(/^dbguard: cannot prove masked: /);
    expect(by('UPDATE')[0]).toMatchObject({ decision: 'deny', reason: 'masked_write' });
    expect(by('UPDATE')[0].message).toMatch(/cannot write public\.reason_people\.ssn from a masked value/);
    const parse = q.find((e) => e.sqlstate === '42601');
    expect(parse).toMatchObject({
      decision: 'deny',
      reason: 'unparseable',
      message: 'dbguard: statement does not parse',
    });
    // no value in any of it
    expect(fs.readFileSync(path.join(dir, 'audit.jsonl'), 'utf8')).not.toContain(SSN);

    const metrics = await (await fetch(`${sidecar.health!.url}/metrics`)).text();
    const count = (rule: string, reason: string) =>
      Number(
        new RegExp(
          `^dbguard_denied_queries_total\\{policy="shop/reasons",rule="${rule.replace(/[()]/g, '\\$&')}",reason="${reason}"\\} (\\d+)$`,
          'm',
        ).exec(metrics)?.[1] ?? 0,
      );
    expect(count('no-drops', 'rule')).toBe(1);
    expect(count('pii', 'cannot_prove_masked') + count('shop/pii', 'cannot_prove_masked')).toBe(1);
    expect(count('(unparseable)', 'unparseable')).toBe(1);
  });
});
