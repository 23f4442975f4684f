/**
 * One-shot queries for tests: a connection of their own, closed after. `adminQuery` sets up tables,
 * rows and grants as the server's superuser; `queryOnce` runs a statement as anyone, anywhere (a
 * proxy, the server).
 */
import pg from 'pg';
import type { PgServer } from './pg-cluster.js';

/** Runs `sql` (one or more statements) on a new connection made with `config`, then closes it. */
export async function queryOnce(config: pg.ClientConfig, sql: string): Promise<pg.QueryResult> {
  const c = new pg.Client(config);
  await c.connect();
  try {
    return await c.query(sql);
  } finally {
    await c.end();
  }
}

/** Runs `sql` as the superuser in `database`. */
export function adminQuery(server: PgServer, sql: string, database = 'app'): Promise<pg.QueryResult> {
  return queryOnce(
    { host: server.host, port: server.port, user: server.user, password: server.password, database },
    sql,
  );
}
