/**
 * Waiting on the server itself instead of the clock: a test that must act while a statement runs (a
 * cancel, a shutdown) waits until pg_stat_activity shows that statement active, however slow the host.
 */
import { adminQuery } from './admin.js';
import type { PgServer } from './pg-cluster.js';
import { until } from './until.js';

/** Resolves once a backend is running a statement whose text equals `query` (state 'active'). */
export async function untilActive(server: PgServer, query: string, timeoutMs = 10_000): Promise<void> {
  await until(
    `pg_stat_activity to show ${JSON.stringify(query)} running`,
    async () => {
      const r = await adminQuery(
        server,
        `select count(*)::int as n from pg_stat_activity where state = 'active' and query = $q$${query}$q$`,
        'postgres',
      );
      return r.rows[0].n > 0;
    },
    timeoutMs,
    25,
  );
}
