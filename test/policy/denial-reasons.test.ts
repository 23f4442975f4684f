/**
 * Each refusal says its true reason (issue: `pg_stat_activity` was refused as "exposes column
 * statistics"): statistics views and statement-text views, judged for a masked subject with the
 * catalog of the real test server.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { CatalogSnapshot } from '../../policy/catalog.js';
import { judge } from '../../policy/judge.js';
import { initParser } from '../../policy/parser.js';
import { loadCatalog, masked, maskingPolicy, sessionOf } from './fixtures.js';

const server = inject('pg');
const policy = maskingPolicy('public');
let client: pg.Client;
let catalog: CatalogSnapshot;

beforeAll(async () => {
  await initParser();
  client = new pg.Client({
    host: server.host,
    port: server.port,
    user: 'app',
    password: 'app',
    database: 'app',
  });
  await client.connect();
  catalog = await loadCatalog(client, policy);
});
afterAll(() => client?.end());

describe('denials name their reason', () => {
  it.each([
    ['select * from pg_stats', /pg_catalog\.pg_stats exposes column statistics/],
    ['select * from pg_catalog.pg_statistic', /pg_statistic exposes column statistics/],
    ['select query from pg_stat_activity', /pg_stat_activity exposes statement texts of other sessions/],
    [
      'select * from pg_prepared_statements',
      /pg_prepared_statements exposes statement texts of other sessions/,
    ],
  ])('%s', (sql, why) => {
    const d = judge(sql, sessionOf(masked, catalog, 'app'), policy);
    expect(d.kind).toBe('deny');
    expect(d.message).toMatch(why);
  });
});
