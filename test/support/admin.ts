/** Test set-up as the server's superuser: tables, rows and grants that the tests then read through the proxy. */
import pg from 'pg';
import type { PgServer } from './pg-cluster.js';

/** Runs `sql` (one or more statements) as the superuser in `database`, on a connection of its own. */
export async function adminQuery(server: PgServer, sql: string, database = 'app'): Promise<pg.QueryResult> {
  const c = new pg.Client({
    host: server.host,
    port: server.port,
    user: server.user,
    password: server.password,
    database,
  });
  await c.connect();
  try {
    return await c.query(sql);
  } finally {
    await c.end();
  }
}
