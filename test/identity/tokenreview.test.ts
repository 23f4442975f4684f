/** TokenReview against a tiny local API server over real HTTP. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTokenVerifier, TokenReviewVerifier } from '../../sidecar/identity/index.js';
import { reason } from './helpers.js';

const PROXY_TOKEN = 'proxy-own-token';
let server: Server;
let api: string;
const reviews: any[] = [];
/** `lax`: an API server that ignores the requested audiences and answers with the token's own */
let mode: 'normal' | 'forbidden' | 'broken' | 'lax' = 'normal';

/** token → who the API server says it is, and for which audiences */
const KNOWN: Record<string, { username: string; groups: string[]; audiences: string[] }> = {
  'tok-alice': {
    username: 'system:serviceaccount:shop:checkout',
    groups: ['system:serviceaccounts'],
    audiences: ['dbguard'],
  },
  'tok-other-aud': { username: 'bob', groups: [], audiences: ['vault'] },
  /** what every pod has mounted: a token for the API server itself */
  'tok-automounted': {
    username: 'system:serviceaccount:default:default',
    groups: ['system:serviceaccounts'],
    audiences: ['https://kubernetes.default.svc.cluster.local'],
  },
};

beforeAll(async () => {
  server = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      res.setHeader('content-type', 'application/json');
      if (req.method !== 'POST' || req.url !== '/apis/authentication.k8s.io/v1/tokenreviews') {
        res.statusCode = 404;
        res.end('{}');
        return;
      }
      if (req.headers.authorization !== `Bearer ${PROXY_TOKEN}` || mode === 'forbidden') {
        res.statusCode = 403;
        res.end(JSON.stringify({ kind: 'Status', reason: 'Forbidden' }));
        return;
      }
      if (mode === 'broken') {
        res.statusCode = 500;
        res.end('{}');
        return;
      }
      const review = JSON.parse(body);
      reviews.push(review);
      const who = KNOWN[review.spec.token];
      const wanted: string[] | undefined = mode === 'lax' ? undefined : review.spec.audiences;
      const audiences = who ? (wanted ? who.audiences.filter((a) => wanted.includes(a)) : who.audiences) : [];
      const authenticated = !!who && (!wanted || audiences.length > 0);
      res.statusCode = 201;
      res.end(
        JSON.stringify({
          apiVersion: 'authentication.k8s.io/v1',
          kind: 'TokenReview',
          status: authenticated
            ? { authenticated, user: { username: who!.username, uid: 'u-1', groups: who!.groups }, audiences }
            : { authenticated: false, error: '[invalid bearer token, token lookup failed]' },
        }),
      );
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  api = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise<void>((r) => server.close(() => r()));
});

describe('TokenReviewVerifier', () => {
  it('asks the API server with the proxy token and returns user and groups', async () => {
    const v = createTokenVerifier({
      type: 'tokenreview',
      apiServer: api,
      token: PROXY_TOKEN,
      audiences: ['dbguard'],
    });
    const r = await v.verify('tok-alice');
    expect(r.user).toBe('system:serviceaccount:shop:checkout');
    expect(r.groups).toEqual(['system:serviceaccounts']);
    expect(reviews.at(-1)).toMatchObject({
      apiVersion: 'authentication.k8s.io/v1',
      kind: 'TokenReview',
      spec: { token: 'tok-alice', audiences: ['dbguard'] },
    });
  });

  it('refuses unknown tokens and wrong audiences', async () => {
    const v = new TokenReviewVerifier({
      type: 'tokenreview',
      apiServer: api,
      token: PROXY_TOKEN,
      audiences: ['dbguard'],
    });
    expect(await reason(v.verify('tok-nobody'))).toBe('review_denied');
    expect(await reason(v.verify('tok-other-aud'))).toBe('review_denied');
    expect(await reason(v.verify(''))).toBe('malformed');
  });

  it('checks the audiences in the answer itself', async () => {
    const v = new TokenReviewVerifier({
      type: 'tokenreview',
      apiServer: api,
      token: PROXY_TOKEN,
      audiences: ['dbguard'],
    });
    try {
      mode = 'lax';
      expect(await reason(v.verify('tok-other-aud'))).toBe('bad_audience');
      expect((await v.verify('tok-alice')).user).toBe('system:serviceaccount:shop:checkout');
    } finally {
      mode = 'normal';
    }
  });

  it('needs an audience: the automounted token of any pod never logs in (issue 17)', async () => {
    // Without one the API server's own audience would decide, and every pod holds a token for it.
    expect(
      () => new TokenReviewVerifier({ type: 'tokenreview', apiServer: api, token: PROXY_TOKEN } as any),
    ).toThrow(/at least one audience is required/);
    expect(
      () =>
        new TokenReviewVerifier({ type: 'tokenreview', apiServer: api, token: PROXY_TOKEN, audiences: [] }),
    ).toThrow(/at least one audience is required/);
    const v = new TokenReviewVerifier({
      type: 'tokenreview',
      apiServer: api,
      token: PROXY_TOKEN,
      audiences: ['dbguard-gateway'],
      cacheSeconds: 0,
    });
    expect(await reason(v.verify('tok-automounted'))).toBe('review_denied');
    try {
      mode = 'lax'; // an API server that ignores the requested audiences: the answer is checked too
      expect(await reason(v.verify('tok-automounted'))).toBe('bad_audience');
    } finally {
      mode = 'normal';
    }
  });

  it('reads its own token from a file on every review (projected tokens rotate)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dbguard-sa-'));
    try {
      const file = join(dir, 'token');
      writeFileSync(file, 'wrong-token\n');
      const v = new TokenReviewVerifier({
        type: 'tokenreview',
        apiServer: api,
        tokenFile: file,
        audiences: ['dbguard'],
        cacheSeconds: 0,
      });
      expect(await reason(v.verify('tok-alice'))).toBe('unavailable'); // 403 for the proxy itself
      writeFileSync(file, `${PROXY_TOKEN}\n`);
      expect((await v.verify('tok-alice')).groups).toEqual(['system:serviceaccounts']);
      const missing = new TokenReviewVerifier({
        type: 'tokenreview',
        apiServer: api,
        tokenFile: join(dir, 'nope'),
        audiences: ['dbguard'],
      });
      expect(await reason(missing.verify('tok-alice'))).toBe('unavailable');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('caches positive answers only', async () => {
    const v = new TokenReviewVerifier({
      type: 'tokenreview',
      apiServer: api,
      token: PROXY_TOKEN,
      audiences: ['dbguard'],
      cacheSeconds: 60,
    });
    const before = reviews.length;
    await v.verify('tok-alice');
    await v.verify('tok-alice');
    expect(reviews.length).toBe(before + 1);
    await reason(v.verify('tok-nobody'));
    await reason(v.verify('tok-nobody'));
    expect(reviews.length).toBe(before + 3);
  });

  it('an API server that fails is unavailable, not accepted', async () => {
    const v = new TokenReviewVerifier({
      type: 'tokenreview',
      apiServer: api,
      token: PROXY_TOKEN,
      audiences: ['dbguard'],
      cacheSeconds: 0,
    });
    try {
      mode = 'broken';
      expect(await reason(v.verify('tok-alice'))).toBe('unavailable');
      mode = 'forbidden';
      expect(await reason(v.verify('tok-alice'))).toBe('unavailable');
    } finally {
      mode = 'normal';
    }
    const down = new TokenReviewVerifier({
      type: 'tokenreview',
      apiServer: 'http://127.0.0.1:1',
      token: 'x',
      audiences: ['dbguard'],
      timeoutMs: 500,
    });
    expect(await reason(down.verify('tok-alice'))).toBe('unavailable');
  });

  it('finds the in-cluster API server from the environment, or says it cannot', () => {
    expect(
      () => new TokenReviewVerifier({ type: 'tokenreview', token: 'x', audiences: ['dbguard'] }, {}),
    ).toThrow(/KUBERNETES_SERVICE_HOST/);
    expect(
      () =>
        new TokenReviewVerifier(
          { type: 'tokenreview', token: 'x', audiences: ['dbguard'] },
          { KUBERNETES_SERVICE_HOST: '10.0.0.1', KUBERNETES_SERVICE_PORT: '443' },
        ),
    ).not.toThrow();
  });
});
