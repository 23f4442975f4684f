/**
 * The shared leak detector (test/support/leaks.ts) fires on real values read over a direct connection,
 * in every form it claims to catch, and stays quiet on the forms a mask shows on purpose.
 */
import { describe, expect, inject, it } from 'vitest';
import { adminQuery } from '../support/admin.js';
import { leakDetector } from '../support/leaks.js';

const SECRETS = ['ada.lovelace@example.org', '123-45-6789', '4111111111111111'];
const SHOWN = ['a***@example.org', '****', '************1111'];

describe('leak detector', () => {
  const server = inject('pg');
  const leaks = leakDetector(SECRETS, { shown: SHOWN });

  it('fires on every transformed form of a real value read directly', async () => {
    const r = await adminQuery(
      server,
      `with v(x) as (values ${SECRETS.map((s) => `('${s}')`).join(', ')})
       select x as clear, upper(x) as upper, reverse(x) as reversed, substr(x, 3, 7) as sub,
              encode(convert_to(x, 'UTF8'), 'hex') as hex, convert_to(x, 'UTF8')::text as bytea,
              encode(convert_to(x, 'UTF8'), 'base64') as b64, md5(x) as md5,
              encode(sha256(convert_to(x, 'UTF8')), 'hex') as sha256
         from v`,
    );
    for (const row of r.rows) {
      for (const [form, value] of Object.entries(row)) {
        expect(leaks(`{"x": ${JSON.stringify(value)}}`), `${form}: ${value}`).not.toEqual([]);
      }
    }
  });

  it('is quiet on masked forms and unrelated output', async () => {
    const r = await adminQuery(
      server,
      `select 'a***@example.org' as email, '****' as ssn, '************1111' as card, 42 as n`,
    );
    expect(leaks(JSON.stringify(r.rows))).toEqual([]);
  });
});
