import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { expect, it } from 'vitest';
import { direct, pgClient, startTestProxy, uniq, via } from './helpers.js';
const ex = promisify(execFile);
it('perf', async () => {
  const proxy = await startTestProxy();
  const db = uniq('perf');
  const c = await pgClient(direct(), 'postgres', 'postgres', 'postgres');
  await c.query(`create database ${db} owner app`);
  const env = { ...process.env, PGPASSWORD: 'app' };
  const s = direct();
  await ex('pgbench', ['-h', s.host, '-p', String(s.port), '-U', 'app', '-i', '-s', '1', '-q', db], { env });
  for (const mode of ['simple', 'prepared']) {
    for (const [label, t] of [['direct', direct()], ['proxy', via(proxy)]] as const) {
      const { stdout } = await ex('pgbench', ['-h', t.host, '-p', String(t.port), '-U', 'app', '-S', '-M', mode, '-c', '4', '-j', '2', '-T', '4', '-n', db], { env });
      console.log(mode, label, /tps = ([\d.]+)/.exec(stdout)?.[1]);
    }
  }
  for (const [label, t] of [['direct', direct()], ['proxy', via(proxy)]] as const) {
    const k = await pgClient(t);
    const t0 = performance.now();
    await k.query({ text: "select g, repeat('x', 200) from generate_series(1, 300000) g", rowMode: 'array' });
    console.log('300k rows', label, Math.round(performance.now() - t0), 'ms');
    await k.end();
  }
  await proxy.close();
  await c.query(`drop database ${db} with (force)`);
  await c.end();
  expect(1).toBe(1);
}, 120_000);
