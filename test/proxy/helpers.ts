/**
 * Test support for the proxy: start an in-process proxy in front of the test server, build client
 * configurations for the proxy and for the server directly; the raw protocol helpers of
 * test/support/wire.ts are re-exported here.
 */
import pg from 'pg';
import postgres from 'postgres';
import { inject } from 'vitest';
import type { Logger, LogLevel } from '../../sidecar/log.js';
import { type ProxyHandle, type ProxyOptions, startProxy } from '../../sidecar/proxy.js';

export const server = () => inject('pg');

export interface TestProxy extends ProxyHandle {
  logs: { level: LogLevel; msg: string; fields?: Record<string, unknown> }[];
}

export async function startTestProxy(opts: Partial<ProxyOptions> = {}): Promise<TestProxy> {
  const s = server();
  const logs: TestProxy['logs'] = [];
  const logger: Logger = {
    log: (level, msg, fields) => logs.push({ level, msg, ...(fields ? { fields } : {}) }),
  };
  const proxy = await startProxy({
    upstream: { host: s.host, port: s.port, sslmode: 'disable' },
    logger,
    ...opts,
  });
  return Object.assign(proxy, { logs });
}

export interface Target {
  host: string;
  port: number;
}

export const direct = (): Target => ({ host: server().host, port: server().port });
export const via = (p: ProxyHandle): Target => ({ host: p.host, port: p.port });

export function pgConfig(t: Target, user = 'app', password = 'app', database = 'app'): pg.ClientConfig {
  return { host: t.host, port: t.port, user, password, database };
}

export async function pgClient(
  t: Target,
  user = 'app',
  password = 'app',
  database = 'app',
): Promise<pg.Client> {
  const c = new pg.Client(pgConfig(t, user, password, database));
  await c.connect();
  return c;
}

export function pgjs(t: Target, opts: postgres.Options<Record<string, postgres.PostgresType>> = {}) {
  return postgres({
    host: t.host,
    port: t.port,
    user: 'app',
    password: 'app',
    database: 'app',
    max: 1,
    onnotice: () => {},
    ...opts,
  });
}

export function url(t: Target, user = 'app', password = 'app', database = 'app'): string {
  return `postgres://${user}:${password}@${t.host}:${t.port}/${database}`;
}

/** A unique, lower-case name for this test's tables. */
export function uniq(prefix: string): string {
  return `${prefix}_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
}

export {
  cstring,
  errorFields,
  int16,
  int32,
  msg,
  RawConn,
  type RawMessage,
  startupMessage,
} from '../support/wire.js';
