/**
 * A database shaped like the one the examples and docs talk about (`payments`: id, card_number,
 * cardholder_email), made fresh for one test file and dropped after it, owned by the `app` role.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';

export interface PgInfo {
  host: string;
  port: number;
  user: string;
  password: string;
  database: string;
}

export async function createPaymentsDb(server: PgInfo): Promise<{ url: string; drop(): Promise<void> }> {
  const name = `k_payments_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ ...server });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name} OWNER app`);
  } finally {
    await admin.end();
  }
  const url = `postgres://app:app@${server.host}:${server.port}/${name}`;
  const app = new pg.Client({ connectionString: url });
  await app.connect();
  try {
    await app.query(`CREATE TABLE public.payments (
      id int PRIMARY KEY, card_number text NOT NULL, cardholder_email text, amount numeric(10,2))`);
    await app.query(`INSERT INTO public.payments VALUES (1, '4111111111111111', 'alice@example.org', 12.50)`);
  } finally {
    await app.end();
  }
  return {
    url,
    async drop() {
      const c = new pg.Client({ ...server });
      await c.connect();
      try {
        await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await c.end();
      }
    },
  };
}
