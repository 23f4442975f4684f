/**
 * The Hash strategy's keyed function for tests: `dbguard db install`'s own code (cli/db.ts), run as
 * the server's superuser in one database, with the given keys (key id → key text).
 */
import pg from 'pg';
import { installHashFunction } from '../../cli/db.js';
import type { PgServer } from './pg-cluster.js';

export async function installHashKeys(
  server: PgServer,
  database: string,
  keys: Record<string, string>,
): Promise<void> {
  const c = new pg.Client({
    host: server.host,
    port: server.port,
    user: server.user,
    password: server.password,
    database,
  });
  await c.connect();
  try {
    await installHashFunction(
      c,
      Object.entries(keys).map(([id, key]) => ({ id, key: Buffer.from(key, 'utf8') })),
    );
  } finally {
    await c.end();
  }
}
