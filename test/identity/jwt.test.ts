/**
 * JWT verification against a JWKS and an OIDC discovery document served locally over real HTTP,
 * with keys from jose: a valid token gives user and groups, every bad token is refused with its
 * reason.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { type CryptoKey, exportJWK, generateKeyPair, type JWTPayload, SignJWT, UnsecuredJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTokenVerifier, JwtVerifier, looksLikeJwt } from '../../sidecar/identity/index.js';
import { reason } from './helpers.js';

let server: Server;
let base: string;
let signing: CryptoKey;
let stranger: CryptoKey;
const hits = { discovery: 0, jwks: 0 };
let issuer: string;
const AUD = 'dbguard';

beforeAll(async () => {
  const pair = await generateKeyPair('ES256', { extractable: true });
  const other = await generateKeyPair('ES256', { extractable: true });
  signing = pair.privateKey;
  stranger = other.privateKey;
  const jwk = { ...(await exportJWK(pair.publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' };
  server = createServer((req, res) => {
    res.setHeader('content-type', 'application/json');
    if (req.url === '/.well-known/openid-configuration') {
      hits.discovery++;
      res.end(JSON.stringify({ issuer, jwks_uri: `${base}/keys` }));
    } else if (req.url === '/keys') {
      hits.jwks++;
      res.end(JSON.stringify({ keys: [jwk] }));
    } else if (req.url === '/liar/.well-known/openid-configuration') {
      res.end(JSON.stringify({ issuer: 'https://someone-else', jwks_uri: `${base}/keys` }));
    } else {
      res.statusCode = 404;
      res.end('{}');
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  issuer = base;
});

afterAll(async () => {
  await new Promise<void>((r) => server.close(() => r()));
});

const now = () => Math.floor(Date.now() / 1000);

function sign(claims: JWTPayload, opts: { key?: CryptoKey; kid?: string } = {}): Promise<string> {
  return new SignJWT({ iss: issuer, aud: AUD, exp: now() + 300, sub: 'svc-123', ...claims })
    .setProtectedHeader({ alg: 'ES256', kid: opts.kid ?? 'k1' })
    .sign(opts.key ?? signing);
}

function verifier(extra: Partial<ConstructorParameters<typeof JwtVerifier>[0]> = {}) {
  return new JwtVerifier({ type: 'jwt', issuer, audiences: [AUD], jwksUrl: `${base}/keys`, ...extra });
}

describe('JwtVerifier', () => {
  it('accepts a valid token: user from email, groups from groups', async () => {
    const v = verifier();
    const r = await v.verify(
      await sign({ email: 'alice@example.org', email_verified: true, groups: ['developers', 'pii-readers'] }),
    );
    expect(r.user).toBe('alice@example.org');
    expect(r.groups).toEqual(['developers', 'pii-readers']);
    expect(r.claims.sub).toBe('svc-123');
  });

  it('falls back to sub, and ignores an email that is not verified (issue 17)', async () => {
    const v = verifier();
    expect((await v.verify(await sign({}))).user).toBe('svc-123');
    expect((await v.verify(await sign({ email: 'x@evil.example', email_verified: false }))).user).toBe(
      'svc-123',
    );
    // absent is not verified: an issuer that lets anyone type an address must not make it a User subject
    expect((await v.verify(await sign({ email: 'alice@example.org' }))).user).toBe('svc-123');
    expect((await v.verify(await sign({ email: 'alice@example.org', email_verified: 'yes' }))).user).toBe(
      'svc-123',
    );
    expect((await v.verify(await sign({ email: 'alice@example.org', email_verified: 'true' }))).user).toBe(
      'alice@example.org',
    );
    expect((await v.verify(await sign({}))).groups).toEqual([]);
  });

  it('maps configured claims, including dotted paths', async () => {
    const v = verifier({ userClaim: 'preferred_username', groupsClaim: 'realm_access.roles' });
    const r = await v.verify(await sign({ preferred_username: 'bob', realm_access: { roles: ['ops'] } }));
    expect(r).toMatchObject({ user: 'bob', groups: ['ops'] });
    expect(await reason(v.verify(await sign({})))).toBe('malformed'); // no preferred_username
  });

  it('refuses each bad token with its reason', async () => {
    const v = verifier({ clockToleranceSeconds: 5 });
    expect(await reason(v.verify(await sign({ exp: now() - 60 })))).toBe('expired');
    expect(await reason(v.verify(await sign({ nbf: now() + 600 })))).toBe('not_yet_valid');
    expect(await reason(v.verify(await sign({ aud: 'someone-else' })))).toBe('bad_audience');
    expect(await reason(v.verify(await sign({ iss: 'https://evil.example' })))).toBe('bad_issuer');
    expect(await reason(v.verify(await sign({}, { key: stranger })))).toBe('bad_signature');
    expect(await reason(v.verify(await sign({}, { key: stranger, kid: 'k2' })))).toBe('bad_signature');
    const none = new UnsecuredJWT({ iss: issuer, aud: AUD, exp: now() + 300, sub: 'x' }).encode();
    expect(await reason(v.verify(none))).toBe('bad_signature');
    expect(await reason(v.verify('abc.def.ghi'))).toBe('malformed');
    expect(await reason(v.verify('not a token'))).toBe('malformed');
    expect(await reason(v.verify(''))).toBe('malformed');
    const noExp = await new SignJWT({ iss: issuer, aud: AUD, sub: 'x' })
      .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
      .sign(signing);
    expect(await reason(v.verify(noExp))).toBe('malformed');
  });

  it('tolerates small clock skew', async () => {
    const v = verifier({ clockToleranceSeconds: 30 });
    expect((await v.verify(await sign({ exp: now() - 10 }))).user).toBe('svc-123');
    expect((await v.verify(await sign({ nbf: now() + 10 }))).user).toBe('svc-123');
  });

  it('never puts the token in the error', async () => {
    const token = await sign({ exp: now() - 60 });
    const err = await verifier()
      .verify(token)
      .then(
        () => undefined,
        (e: Error) => e,
      );
    // the expired token is refused (an accepted one fails here), and the error does not echo it
    expect(err).toBeInstanceOf(Error);
    expect(err!.message).not.toContain(token.split('.')[2]!);
    expect(err!.message).not.toContain(token.split('.')[1]!);
  });
});

describe('OIDC discovery', () => {
  it('finds the keys through /.well-known/openid-configuration', async () => {
    const before = { ...hits };
    const v = createTokenVerifier({ type: 'jwt', issuer, audiences: [AUD] });
    const r = await v.verify(
      await sign({ email: 'carol@example.org', email_verified: true, groups: 'auditors' }),
    );
    expect(r).toMatchObject({ user: 'carol@example.org', groups: ['auditors'] });
    expect(hits.discovery).toBe(before.discovery + 1);
    expect(hits.jwks).toBeGreaterThan(before.jwks);
    // discovery and keys are cached
    await v.verify(await sign({}));
    expect(hits.discovery).toBe(before.discovery + 1);
  });

  it('refuses a discovery document naming another issuer', async () => {
    const v = createTokenVerifier({ type: 'jwt', issuer: `${base}/liar`, audiences: [AUD] });
    expect(await reason(v.verify(await sign({ iss: `${base}/liar` })))).toBe('unavailable');
  });

  it('an unreachable issuer is unavailable, not accepted', async () => {
    const v = createTokenVerifier({
      type: 'jwt',
      issuer: 'http://127.0.0.1:1',
      audiences: [AUD],
      timeoutMs: 500,
    });
    expect(await reason(v.verify(await sign({ iss: 'http://127.0.0.1:1' })))).toBe('unavailable');
  });

  it('bad configuration is an error at construction', () => {
    expect(() => createTokenVerifier({ type: 'jwt', issuer, audiences: [] })).toThrow(/audience/);
    expect(() =>
      createTokenVerifier({ type: 'jwt', issuer, audiences: [AUD], jwksUrl: 'not a url' }),
    ).toThrow();
    expect(() => createTokenVerifier({ type: 'nope' } as never)).toThrow(/unknown type 'nope'/);
  });
});

describe('looksLikeJwt', () => {
  it('tells tokens from passwords', async () => {
    expect(looksLikeJwt(await sign({}))).toBe(true);
    expect(looksLikeJwt(new UnsecuredJWT({}).encode())).toBe(true);
    expect(looksLikeJwt('hunter2')).toBe(false);
    expect(looksLikeJwt('a.b.c')).toBe(false);
    expect(looksLikeJwt('pass.word.with.dots')).toBe(false);
    expect(looksLikeJwt(`${Buffer.from('{"x":1}').toString('base64url')}.e30.sig`)).toBe(false);
    expect(looksLikeJwt('')).toBe(false);
  });
});
