/** The Hash keyed function's pure parts: key ids, the call the rewrite emits, the HMAC pads. */
import crypto from 'node:crypto';
import { describe, expect, test } from 'vitest';
import { hmacPads, KEY_ID_PATTERN, keyCopyText } from '../../cli/hash-key-store.js';
import { hashCall, hashFunctionStatus, hashKeyId, hashKeyIds } from '../../policy/hash-key.js';

const sha = (...parts: Buffer[]) => crypto.createHash('sha256').update(Buffer.concat(parts)).digest();

describe('Hash keyed function', () => {
  test('the key id names the Secret key, qualified by the namespace; it is all the policy carries', () => {
    expect(hashKeyId('shop', { name: 'pii-salt', key: 'salt' })).toBe('shop/pii-salt/salt');
    expect(KEY_ID_PATTERN.test('shop/pii-salt/salt')).toBe(true);
    for (const bad of ['shop/pii-salt', "shop/x'/y", 'a/b/c/d', 'shop/pii salt/k'])
      expect(KEY_ID_PATTERN.test(bad), bad).toBe(false);
    expect(() => keyCopyText([{ id: "x/y'; drop table t; --/z", key: Buffer.from('k') }])).toThrow(
      /is not NAMESPACE\/SECRET\/KEY/,
    );
    expect(
      hashKeyIds({
        masking: [
          { columns: [{ hash: { keyId: 'b/s/k' } }, {}, { hash: { keyId: 'a/s/k' } }] },
          { columns: [{ hash: { keyId: 'b/s/k' } }] },
        ],
      }),
    ).toEqual(['a/s/k', 'b/s/k']);
  });

  test('the call quotes the key id as a literal and pins both argument types', () => {
    expect(hashCall('"t"."c"', "ns/it's/k")).toBe(
      `dbguard.hash(CAST("t"."c" AS pg_catalog.text), CAST('ns/it''s/k' AS pg_catalog.text))`,
    );
  });

  test('the stored pads give exactly HMAC-SHA256 for keys of every length (longer than a block: hashed first)', () => {
    for (const len of [1, 10, 63, 64, 65, 100, 300]) {
      const key = crypto.randomBytes(len);
      const { inner, outer } = hmacPads(key);
      expect(inner.length).toBe(64);
      for (const m of ['', 'x', 'CUST-REF-0001', 'é'.repeat(100)]) {
        const msg = Buffer.from(m, 'utf8');
        // what dbguard.hash computes: sha256(outer || sha256(inner || m))
        const sqlForm = sha(outer, sha(inner, msg)).toString('hex');
        expect(sqlForm, `key length ${len}`).toBe(crypto.createHmac('sha256', key).update(msg).digest('hex'));
      }
    }
  });

  test('the COPY rows carry the pads in hex, never the key', () => {
    const key = Buffer.from('a-very-secret-key');
    const text = keyCopyText([{ id: 'shop/pii-salt/salt', key }]);
    const { inner, outer } = hmacPads(key);
    expect(text).toBe(`shop/pii-salt/salt\t\\\\x${inner.toString('hex')}\t\\\\x${outer.toString('hex')}\n`);
    expect(text).not.toContain('a-very-secret-key');
  });

  test('the catalog verdict: absent, ok, or the reason', () => {
    expect(hashFunctionStatus(undefined)).toEqual({ usable: false, why: 'dbguard.hash is not installed' });
    expect(hashFunctionStatus('ok')).toEqual({ usable: true });
    expect(hashFunctionStatus('no')).toEqual({ usable: false, why: 'no' });
  });
});

describe('the compiled format', () => {
  test('a policy of the format that carried the salt (v1) is refused, not read with an empty salt', async () => {
    const { checkCompiledPolicy } = await import('../../sidecar/policy-client.js');
    const { COMPILED_FORMAT } = await import('../../api/compiled.js');
    const { policyVersion } = await import('../../api/version.js');
    const { policyOf } = await import('./fixtures.js');
    const v2 = policyOf();
    const v2ok = { ...v2, version: policyVersion(v2) };
    expect(checkCompiledPolicy(v2ok)).toBe(v2ok);
    const { version: _v, ...body } = { ...v2, format: 'dbguard.io/compiled-policy/v1' };
    const v1 = { ...body, version: policyVersion(body as never) };
    expect(() => checkCompiledPolicy(v1)).toThrow(
      `not a compiled policy (format must be ${COMPILED_FORMAT})`,
    );
  });
});
