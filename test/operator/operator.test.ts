/**
 * The operator against a Kubernetes API served over real HTTPS in this process: compile, status,
 * Events, policy distribution with long-poll, last-known-good in the sidecar's policy client,
 * broken resources, and leader election between two replicas.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CompiledPolicy } from '../../api/compiled.js';
import { crdObjects } from '../../api/crds.js';
import { type RunningOperator, runOperator } from '../../operator/operator.js';
import { PolicyClient } from '../../sidecar/policy-client.js';
import { type KubeApi, serviceAccountTokenReview, startKubeApi } from '../support/kube-api/index.js';
import { until } from '../support/until.js';

const NS = 'shop';
const quiet = () => {};

function policy(extra: Record<string, unknown> = {}) {
  return {
    apiVersion: 'dbguard.io/v1alpha1',
    kind: 'DatabasePolicy',
    metadata: { name: 'orders', namespace: NS },
    spec: {
      upstream: { host: 'orders-db.shop.svc.cluster.local' },
      defaultAction: 'Allow',
      rules: [{ name: 'no-drop', action: 'Deny', match: { commands: ['DROP *'] }, message: 'no drops' }],
      ...extra,
    },
  };
}

function maskingRule(strategy = 'Redact') {
  return {
    apiVersion: 'dbguard.io/v1alpha1',
    kind: 'MaskingRule',
    metadata: { name: 'customer-pii', namespace: NS },
    spec: { policyRef: { name: 'orders' }, columns: [{ table: 'customers', column: 'ssn', strategy }] },
  };
}

describe('operator', () => {
  let api: KubeApi;
  let op: RunningOperator;
  let tmp: string;
  const tokenFile = () => path.join(tmp, 'token');

  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dbguard-op-'));
    api = await startKubeApi({
      crds: crdObjects() as any,
      namespaces: ['default', NS, 'other', 'dbguard-system'],
    });
    api.setTokenReview(
      serviceAccountTokenReview({ audience: 'dbguard', groups: ['system:serviceaccounts'] }),
    );
    fs.writeFileSync(tokenFile(), `sa:${NS}:checkout\n`);
    op = await runOperator({
      kubeConfig: api.kubeConfig(),
      listen: '127.0.0.1:0',
      log: quiet,
      watchdogSeconds: 5,
    });
    // Every test starts from the shop's policy and MaskingRule, compiled and Ready, so each runs alone
    // (`-t NAME`) as well as after the others.
    await api.store.put(policy() as any);
    await api.store.put(maskingRule() as any);
    await until('orders Ready', () =>
      api.store
        .get<any>('dbguard.io/v1alpha1', 'DatabasePolicy', NS, 'orders')
        ?.status?.conditions?.some((c: any) => c.type === 'Ready' && c.status === 'True'),
    );
  });

  afterAll(async () => {
    await op?.close();
    await api?.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  const url = () => `http://127.0.0.1:${op.port}`;
  const stored = (kind: string, name: string) => api.store.get<any>('dbguard.io/v1alpha1', kind, NS, name);

  it('compiles a policy with its MaskingRule, marks it Ready and serves it', async () => {
    await api.store.put(policy() as any);
    await api.store.put(maskingRule() as any);
    const ready = await until('Ready=True', () => {
      const p = stored('DatabasePolicy', 'orders');
      const c = p?.status?.conditions?.find((x: any) => x.type === 'Ready');
      return c?.status === 'True' && p.status.maskingRules === 1 ? p : undefined;
    });
    expect(ready.status.policyVersion).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(ready.status.observedGeneration).toBe(ready.metadata.generation);
    expect(ready.status.rules).toBe(1);
    const mr = await until('MaskingRule Ready', () => {
      const m = stored('MaskingRule', 'customer-pii');
      return m?.status?.conditions?.[0]?.status === 'True' ? m : undefined;
    });
    expect(mr.status.conditions[0].reason).toBe('Bound');

    const res = await fetch(`${url()}/v1/policies/${NS}/orders`, {
      headers: { Authorization: `Bearer sa:${NS}:checkout` },
    });
    expect(res.status).toBe(200);
    const body = (await res.json()) as CompiledPolicy;
    expect(body.version).toBe(ready.status.policyVersion);
    expect(res.headers.get('etag')).toBe(`"${body.version}"`);
    expect(body.masking[0]!.columns[0]).toMatchObject({
      schema: 'public',
      table: 'customers',
      column: 'ssn',
      strategy: 'Redact',
    });

    const again = await fetch(`${url()}/v1/policies/${NS}/orders`, {
      headers: { Authorization: `Bearer sa:${NS}:checkout`, 'If-None-Match': `"${body.version}"` },
    });
    expect(again.status).toBe(304);
    const events = api.store.list<any>('v1', 'Event', NS);
    expect(events.some((e) => e.reason === 'Compiled' && e.involvedObject.name === 'orders')).toBe(true);
  });

  it('refuses sidecars of other namespaces and requests without a valid token', async () => {
    const other = await fetch(`${url()}/v1/policies/${NS}/orders`, {
      headers: { Authorization: 'Bearer sa:other:app' },
    });
    expect(other.status).toBe(403);
    const none = await fetch(`${url()}/v1/policies/${NS}/orders`);
    expect(none.status).toBe(401);
    const bad = await fetch(`${url()}/v1/policies/${NS}/orders`, {
      headers: { Authorization: 'Bearer forged' },
    });
    expect(bad.status).toBe(401);
    const missing = await fetch(`${url()}/v1/policies/${NS}/nope`, {
      headers: { Authorization: `Bearer sa:${NS}:checkout` },
    });
    expect(missing.status).toBe(404);
  });

  describe('no secret travels in a policy (issue 17)', () => {
    // The reproduction: one Secret holds the credentials, the CA and a Hash salt, and the policy names it
    // for all three, so the operator reads it. Every string below is unique to this Secret.
    const SECRET = {
      username: 'svc_vault_3d9q',
      password: 'pw-Vx7q-2291-zz',
      'ca.crt': '-----BEGIN CERTIFICATE-----\nMIIBvaultCA\n-----END CERTIFICATE-----\n',
      salt: 'salt-Qm4-8812-kk',
    };
    const served: string[] = [];
    const fetchVault = (token: string, name = 'vault') =>
      fetch(`${url()}/v1/policies/${NS}/${name}`, { headers: { Authorization: `Bearer ${token}` } });

    beforeAll(async () => {
      await api.store.put({
        apiVersion: 'v1',
        kind: 'Secret',
        metadata: { name: 'vault-db', namespace: NS },
        stringData: SECRET,
      } as any);
      await api.store.put({
        ...policy(),
        metadata: { name: 'vault', namespace: NS },
        spec: {
          ...policy().spec,
          // names a client's startup user, which a proxy holding credentials never uses: a warning
          rules: [
            ...policy().spec.rules,
            {
              name: 'auditors',
              action: 'Allow',
              match: { subjects: [{ kind: 'DatabaseUser', name: 'auditor' }] },
            },
          ],
          upstream: {
            host: 'vault-db.shop.svc',
            sslmode: 'verify-full',
            caSecretRef: { name: 'vault-db', key: 'ca.crt' },
            credentialsSecretRef: { name: 'vault-db' },
          },
        },
      } as any);
      await api.store.put({
        ...maskingRule(),
        metadata: { name: 'vault-pii', namespace: NS },
        spec: {
          policyRef: { name: 'vault' },
          columns: [
            { table: 'customers', column: 'ssn', strategy: 'Redact' },
            {
              table: 'customers',
              column: 'ref',
              strategy: 'Hash',
              hash: { saltSecretRef: { name: 'vault-db', key: 'salt' } },
            },
          ],
        },
      } as any);
      const res = await until('vault served', async () => {
        const r = await fetchVault(`sa:${NS}:checkout`);
        return r.status === 200 ? r : undefined;
      });
      served.push(await res.text());
      // what else the operator publishes about the policy: its status and Events
      await until('vault Ready', () =>
        stored('DatabasePolicy', 'vault')?.status?.conditions?.some((c: any) => c.type === 'Ready'),
      );
      served.push(JSON.stringify(stored('DatabasePolicy', 'vault').status));
      served.push(JSON.stringify(api.store.list<any>('v1', 'Event', NS)));
      // and what a sidecar keeps on disk: its last-known-good file
      const cacheFile = path.join(tmp, 'lkg-vault', 'policy.json');
      let got = false;
      const client = new PolicyClient({
        operatorUrl: url(),
        policy: `${NS}/vault`,
        tokenFile: tokenFile(),
        cacheFile,
        waitSeconds: 1,
        onPolicy: () => {
          got = true;
        },
        log: quiet,
      });
      client.start();
      try {
        await until('sidecar got the vault policy', () => got && fs.existsSync(cacheFile));
        served.push(fs.readFileSync(cacheFile, 'utf8'));
      } finally {
        await client.stop();
      }
    });

    it('the served payload, status, Events and the sidecar cache hold neither the database password nor its user', () => {
      expect(served).toHaveLength(4);
      const payload = JSON.parse(served[0]!) as CompiledPolicy;
      expect(payload.upstream.credentialsSecret).toBe('vault-db');
      expect(payload.upstream.caPem).toBe(SECRET['ca.crt']); // a CA certificate is public
      for (const text of served) {
        expect(text).not.toContain(SECRET.password);
        expect(text).not.toContain(SECRET.username);
      }
    });

    it('warns, still Ready, that DatabaseUser subjects do not tell clients apart when the proxy holds credentials', async () => {
      const conditions = await until('Warning condition', () => {
        const cs = stored('DatabasePolicy', 'vault')?.status?.conditions;
        return cs?.some((c: any) => c.type === 'Warning') ? cs : undefined;
      });
      expect(conditions.find((c: any) => c.type === 'Ready')).toMatchObject({ status: 'True' });
      const w = conditions.find((c: any) => c.type === 'Warning');
      expect(w).toMatchObject({ status: 'True', reason: 'DatabaseUserSubjectWithCredentials' });
      expect(w.message).toContain('DatabaseUser subjects (auditor)');
      expect(w.message).toContain(`Secret ${NS}/vault-db`);
      const events = api.store.list<any>('v1', 'Event', NS);
      expect(
        events.some(
          (e) => e.reason === 'DatabaseUserSubjectWithCredentials' && e.involvedObject.name === 'vault',
        ),
      ).toBe(true);
      // the same subjects without credentials (relay mode: the server proves the user): no warning
      const orders = stored('DatabasePolicy', 'orders');
      expect(orders.status.conditions.some((c: any) => c.type === 'Warning')).toBe(false);
    });

    // The Hash key stays in the database (`dbguard db install`): the policy names it by id only.
    it('the served payload holds no Hash salt', () => {
      for (const text of served) expect(text).not.toContain(SECRET.salt);
    });

    it('a ServiceAccount of another namespace gets 403 and learns nothing, whether the policy exists or not', async () => {
      const hit = await fetchVault('sa:other:app');
      const miss = await fetchVault('sa:other:app', 'no-such-policy');
      expect(hit.status).toBe(403);
      expect(miss.status).toBe(403);
      const body = await hit.text();
      expect(await miss.text()).toBe(body); // not even whether the policy exists
      expect(hit.headers.get('etag')).toBe(miss.headers.get('etag')); // express's, of the body alone
      for (const s of ['vault', SECRET.username, SECRET.password, SECRET.salt, 'sha256:', 'BEGIN'])
        expect(body).not.toContain(s);
      // a user's token (not a ServiceAccount) and a token of the right name but no review: 401
      expect((await fetchVault('alice@example.com')).status).toBe(401);
      // the namespace's own ServiceAccounts, any of them, may read it
      expect((await fetchVault(`sa:${NS}:another-app`)).status).toBe(200);
    });

    it("an automounted token (answered without audiences, i.e. the API server's own) is not a policy token", async () => {
      // Kubernetes: an authenticated TokenReview with empty status.audiences is valid for the API server's
      // audience only, which is what every pod's automounted token is.
      const sa = serviceAccountTokenReview({ audience: 'dbguard', groups: ['system:serviceaccounts'] });
      api.setTokenReview((token, audiences, requester) =>
        token.startsWith('automounted:')
          ? {
              authenticated: true,
              user: { username: `system:serviceaccount:${NS}:default`, groups: [] },
              audiences: [],
            }
          : sa(token, audiences, requester),
      );
      try {
        const r = await fetchVault('automounted:shop-default');
        expect(r.status).toBe(401);
        expect(await r.text()).not.toContain(SECRET.salt);
      } finally {
        api.setTokenReview(sa);
      }
    });
  });

  it('pushes a changed MaskingRule to a long-polling sidecar (before its 30 s wait runs out)', async () => {
    const seen: CompiledPolicy[] = [];
    const client = new PolicyClient({
      operatorUrl: url(),
      policy: `${NS}/orders`,
      tokenFile: tokenFile(),
      cacheFile: path.join(tmp, 'lkg', 'policy.json'),
      waitSeconds: 30,
      onPolicy: (p) => seen.push(p),
      log: quiet,
    });
    client.start();
    try {
      await until('first policy', () => seen.length >= 1);
      // the client is parked in its long-poll at the operator
      await until('the sidecar waits at the operator', () => op.store.waiting() > 0);
      const t0 = Date.now();
      const mr = stored('MaskingRule', 'customer-pii');
      await api.store.put({
        ...mr,
        spec: { ...mr.spec, columns: [{ table: 'customers', column: 'ssn', strategy: 'Nullify' }] },
      });
      await until(
        'changed policy',
        () => seen.find((p) => p.masking[0]?.columns[0]?.strategy === 'Nullify'),
        20_000,
      );
      // pushed: it came long before the 30 s long-poll would have ended on its own (a bound, not a benchmark)
      expect(Date.now() - t0).toBeLessThan(15_000);
      // the last-known-good file holds exactly what is enforced
      const lkg = JSON.parse(fs.readFileSync(path.join(tmp, 'lkg', 'policy.json'), 'utf8')) as CompiledPolicy;
      expect(lkg.version).toBe(client.current()!.version);
    } finally {
      await client.stop();
    }
  });

  it('reports a broken policy with Ready=False naming the field and keeps serving the previous version', async () => {
    // status trails the served version by one reconcile: wait until they agree
    const before = await until('status in step with the served version', () => {
      const v = stored('DatabasePolicy', 'orders')?.status?.policyVersion as string | undefined;
      return v && v === op.store.get(`${NS}/orders`)?.version ? v : undefined;
    });
    const p = stored('DatabasePolicy', 'orders');
    // Duplicate rule names: a CEL rule a real API server checks, this test API does not (nor do clusters
    // older than 1.25), so the operator must catch it itself.
    await api.store.put({
      ...p,
      spec: {
        ...p.spec,
        rules: [
          { name: 'hold', action: 'Deny', match: { commands: ['DELETE'] } },
          { name: 'hold', action: 'Allow', match: { commands: ['DELETE'] } },
        ],
      },
    });
    const broken = await until('Ready=False', () => {
      const o = stored('DatabasePolicy', 'orders');
      const c = o?.status?.conditions?.find((x: any) => x.type === 'Ready');
      return c?.status === 'False' ? { o, c } : undefined;
    });
    expect(broken.c.reason).toBe('InvalidSpec');
    expect(broken.c.message).toMatch(/spec\.rules\[1\]\.name/);
    expect(broken.c.message).toContain(`still serving version ${before}`);
    const served = (await (
      await fetch(`${url()}/v1/policies/${NS}/orders`, {
        headers: { Authorization: `Bearer sa:${NS}:checkout` },
      })
    ).json()) as CompiledPolicy;
    expect(served.version).toBe(before);
    const events = api.store.list<any>('v1', 'Event', NS);
    expect(events.some((e) => e.reason === 'InvalidSpec' && e.type === 'Warning')).toBe(true);
    // fixing it makes it Ready again
    await api.store.put({ ...broken.o, spec: policy().spec });
    await until(
      'Ready again',
      () => stored('DatabasePolicy', 'orders')?.status?.conditions?.[0]?.status === 'True',
    );
  });

  it('reports a MaskingRule whose salt Secret is missing on the policy, naming the field', async () => {
    await api.store.put({
      ...maskingRule(),
      metadata: { name: 'hashed', namespace: NS },
      spec: {
        policyRef: { name: 'orders' },
        columns: [
          {
            table: 'customers',
            column: 'ref',
            strategy: 'Hash',
            hash: { saltSecretRef: { name: 'pii-salt', key: 'salt' } },
          },
        ],
      },
    } as any);
    const c = await until('Ready=False', () => {
      const c = stored('DatabasePolicy', 'orders')?.status?.conditions?.[0];
      return c?.status === 'False' ? c : undefined;
    });
    expect(c.message).toContain('spec.columns[0].hash.saltSecretRef');
    await api.store.put({
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: 'pii-salt', namespace: NS },
      stringData: { salt: 's3cret' },
    } as any);
    // Secrets are read, not watched: the MaskingRule change or the resync picks the Secret up; nudge it
    const mr = stored('MaskingRule', 'hashed');
    await api.store.put({ ...mr, metadata: { ...mr.metadata, labels: { nudge: '1' } } });
    await until(
      'Ready again',
      () => stored('DatabasePolicy', 'orders')?.status?.conditions?.[0]?.status === 'True',
    );
    await api.store.delete('dbguard.io/v1alpha1', 'MaskingRule', NS, 'hashed');
  });

  it('marks a MaskingRule whose policy does not exist', async () => {
    await api.store.put({
      ...maskingRule(),
      metadata: { name: 'orphan', namespace: NS },
      spec: { ...maskingRule().spec, policyRef: { name: 'typo' } },
    } as any);
    const c = await until('orphan condition', () => stored('MaskingRule', 'orphan')?.status?.conditions?.[0]);
    expect(c).toMatchObject({ status: 'False', reason: 'PolicyNotFound' });
    expect(c.message).toContain('spec.policyRef.name');
  });

  it('relists after 410 Gone and still sees changes', async () => {
    const lists = () =>
      api.requests.filter((r) => r.verb === 'list' && r.resource === 'databasepolicies').length;
    const before = lists();
    api.compactHistory();
    const p = stored('DatabasePolicy', 'orders');
    await api.store.put({ ...p, spec: { ...p.spec, defaultAction: 'Deny' } });
    await until('relist', () => lists() > before);
    const served = await until('new version served', () => {
      const c = op.store.get(`${NS}/orders`);
      return c?.defaultAction === 'Deny' ? c : undefined;
    });
    expect(served.defaultAction).toBe('Deny');
  });

  it('sidecar keeps enforcing from disk when the operator is gone, and has nothing when it never had a policy', async () => {
    const cacheFile = path.join(tmp, 'lkg2', 'policy.json');
    const got: CompiledPolicy[] = [];
    const first = new PolicyClient({
      operatorUrl: url(),
      policy: `${NS}/orders`,
      tokenFile: tokenFile(),
      cacheFile,
      onPolicy: (p) => got.push(p),
      log: quiet,
    });
    first.start();
    await until('policy', () => got.length > 0);
    await first.stop();
    // a restarted sidecar whose operator cannot be reached enforces the file at once
    const errors: Error[] = [];
    const restarted: { p?: CompiledPolicy; source?: string } = {};
    const second = new PolicyClient({
      operatorUrl: 'http://127.0.0.1:9',
      policy: `${NS}/orders`,
      tokenFile: tokenFile(),
      cacheFile,
      onPolicy: (p, source) => Object.assign(restarted, { p, source }),
      onSyncError: (e) => errors.push(e),
      log: quiet,
    });
    second.start();
    expect(restarted.source).toBe('cache');
    expect(restarted.p?.version).toBe(got.at(-1)!.version);
    await until('sync error counted', () => errors.length > 0);
    await second.stop();
    // an edited cache file is refused (its content no longer matches its version)
    const edited = JSON.parse(fs.readFileSync(cacheFile, 'utf8'));
    edited.defaultAction = 'Allow';
    edited.rules = [];
    fs.writeFileSync(cacheFile, JSON.stringify(edited));
    const third = new PolicyClient({
      operatorUrl: 'http://127.0.0.1:9',
      policy: `${NS}/orders`,
      cacheFile,
      onPolicy: () => {},
      log: quiet,
    });
    third.start();
    expect(third.current()).toBeUndefined();
    await third.stop();
  });
});

describe('leader election', () => {
  it('has one leader among two replicas; the other takes over within the lease duration', async () => {
    const api = await startKubeApi({
      crds: crdObjects() as any,
      namespaces: ['default', 'dbguard-system', NS],
    });
    // each replica has its own user, so the request log tells which replica wrote what
    api.addToken('token-replica-a', { username: 'replica-a' });
    api.addToken('token-replica-b', { username: 'replica-b' });
    const common = {
      listen: '127.0.0.1:0',
      leaderElect: true,
      namespace: 'dbguard-system',
      leaseDurationSeconds: 2,
      renewDeadlineSeconds: 1,
      retryPeriodSeconds: 0.2,
      log: quiet,
    };
    const a = await runOperator({
      ...common,
      identity: 'replica-a',
      kubeConfig: api.kubeConfig({ token: 'token-replica-a' }),
    });
    const b = await runOperator({
      ...common,
      identity: 'replica-b',
      kubeConfig: api.kubeConfig({ token: 'token-replica-b' }),
    });
    try {
      await until('a leader', () => a.isLeader() || b.isLeader());
      await new Promise((r) => setTimeout(r, 600));
      expect([a.isLeader(), b.isLeader()].filter(Boolean)).toHaveLength(1);
      const [leader, follower] = a.isLeader() ? [a, b] : [b, a];
      // both serve; only the leader writes status
      await api.store.put(policy() as any);
      await until(
        'status by leader',
        () =>
          api.store.get<any>('dbguard.io/v1alpha1', 'DatabasePolicy', NS, 'orders')?.status?.policyVersion,
      );
      expect(follower.store.get(`${NS}/orders`)?.version).toBeDefined();
      const statusWriters = () =>
        new Set(
          api.requests
            .filter(
              (r) => r.resource === 'databasepolicies' && r.subresource === 'status' && r.verb !== 'get',
            )
            .map((r) => r.user),
        );
      const leaderUser = leader === a ? 'replica-a' : 'replica-b';
      expect([...statusWriters()]).toEqual([leaderUser]);
      // kill the leader without releasing the lease (a crash): the follower waits for expiry, then leads
      leader.elector!.abandon();
      await leader.controller.stop();
      // the follower takes over once the 2 s lease expires (6 s: the lease three times over is the bound)
      await until('takeover', () => follower.isLeader(), 6000);
      const lease = api.store.get<any>(
        'coordination.k8s.io/v1',
        'Lease',
        'dbguard-system',
        'dbguard-operator-leader',
      );
      expect(lease.spec.holderIdentity).toBe(follower === a ? 'replica-a' : 'replica-b');
      expect(lease.spec.leaseTransitions).toBeGreaterThanOrEqual(1);
    } finally {
      await a.close().catch(() => {});
      await b.close().catch(() => {});
      await api.close();
    }
  });
});
