/**
 * The webhook's own PKI: certificates made with @peculiar/x509 that Node's TLS accepts, and the
 * self-managed Secret against the in-process Kubernetes API: created once (also when replicas race),
 * renewed by the leader before expiry (short validity here), never by a follower, CA rotation with
 * both CAs trusted, caBundle kept current.
 */
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { operatorTls } from '../../operator/certs/index.js';
import { SelfManagedCertificates, type SelfManagedOptions } from '../../operator/certs/self-managed.js';
import { certFacts, createCa, issueServing, leafMatches, splitPemBundle } from '../../operator/certs/x509.js';
import { injectionWebhookConfiguration } from '../../operator/inject/webhook-config.js';
import { OperatorMetrics } from '../../operator/metrics.js';
import { type KubeApi, startKubeApi } from '../support/kube-api/index.js';
import { until } from '../support/until.js';

const NS = 'dbguard-system';
const quiet = () => {};

/** Serve with the pair, connect trusting `caPem` for `servername`: resolves to the peer's serial. */
async function handshake(
  pair: { cert: string; key: string },
  caPem: string,
  servername: string,
): Promise<string> {
  const server = https.createServer({ cert: pair.cert, key: pair.key }, (_q, s) => s.end('ok'));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  try {
    return await new Promise<string>((resolve, reject) => {
      const sock = tls.connect(
        { host: '127.0.0.1', port: (server.address() as AddressInfo).port, ca: caPem, servername },
        () => {
          const serial = sock.getPeerCertificate().serialNumber;
          sock.end();
          resolve(serial);
        },
      );
      sock.on('error', reject);
    });
  } finally {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  }
}

describe('x509', () => {
  it('issues a serving certificate that Node TLS verifies against the CA for the Service name only', async () => {
    const ca = await createCa('test-ca', 3600_000);
    const leaf = await issueServing(ca, ['dbguard-operator.dbguard-system.svc', 'dbguard-operator'], 600_000);
    expect(leafMatches(leaf.certPem, leaf.keyPem, ca.certPem)).toBe(true);
    const facts = certFacts(leaf.certPem);
    expect(facts.dnsNames).toEqual(['dbguard-operator.dbguard-system.svc', 'dbguard-operator']);
    expect(facts.notAfter.getTime() - Date.now()).toBeLessThanOrEqual(600_000);
    expect(facts.notAfter.getTime() - Date.now()).toBeGreaterThan(590_000);
    await expect(
      handshake({ cert: leaf.certPem, key: leaf.keyPem }, ca.certPem, 'dbguard-operator.dbguard-system.svc'),
    ).resolves.toMatch(/^[0-9A-F]+$/);
    await expect(
      handshake({ cert: leaf.certPem, key: leaf.keyPem }, ca.certPem, 'other.dbguard-system.svc'),
    ).rejects.toThrow(/altnames|match/i);
    const stranger = await createCa('other-ca', 3600_000);
    expect(leafMatches(leaf.certPem, leaf.keyPem, stranger.certPem)).toBe(false);
    await expect(
      handshake({ cert: leaf.certPem, key: leaf.keyPem }, stranger.certPem, 'dbguard-operator'),
    ).rejects.toThrow();
  });

  it('never issues a certificate that outlives its CA', async () => {
    const ca = await createCa('short-ca', 10_000);
    const leaf = await issueServing(ca, ['a.b.svc'], 3600_000);
    expect(certFacts(leaf.certPem).notAfter.getTime()).toBeLessThanOrEqual(
      certFacts(ca.certPem).notAfter.getTime(),
    );
  });
});

describe('operatorTls flags', () => {
  it('chooses the source and refuses bad flags with a clear message', () => {
    expect(operatorTls({ namespace: NS, mode: 'none' })).toBeUndefined();
    expect(typeof operatorTls({ namespace: NS })).toBe('function');
    expect(() => operatorTls({ namespace: NS, mode: 'files' })).toThrow(/needs --tls-cert and --tls-key/);
    expect(() => operatorTls({ namespace: NS, mode: 'vault' })).toThrow(/self-managed, files or none/);
    expect(() => operatorTls({ namespace: NS, certValidity: 'a year' })).toThrow(/not a duration/);
    expect(() => operatorTls({ namespace: NS, failurePolicy: 'Maybe' })).toThrow(/Fail or Ignore/);
  });
});

describe('self-managed certificates', () => {
  let api: KubeApi;
  const managers: SelfManagedCertificates[] = [];
  beforeAll(async () => {
    api = await startKubeApi({ namespaces: ['default', NS, 'kube-system'] });
  });
  afterAll(async () => {
    for (const m of managers) await m.stop();
    await api?.close();
  });

  const make = (o: Partial<SelfManagedOptions> & { secretName: string }) => {
    const m = new SelfManagedCertificates({
      kubeConfig: api.kubeConfig(),
      namespace: NS,
      serviceName: 'dbguard-operator',
      isLeader: () => true,
      log: quiet,
      ...o,
    });
    managers.push(m);
    return m;
  };
  const secret = (name: string) => api.store.get<any>('v1', 'Secret', NS, name);
  const pem = (s: any, key: string) => Buffer.from(s.data[key], 'base64').toString('utf8');

  it('creates the Secret once when two replicas start together, and both serve the same certificate', async () => {
    const a = make({ secretName: 'race-tls', isLeader: () => false });
    const b = make({ secretName: 'race-tls', isLeader: () => false });
    const [ma, mb] = await Promise.all([a.start(), b.start()]);
    expect(ma.cert).toBe(mb.cert);
    const s = secret('race-tls');
    expect(pem(s, 'tls.crt')).toBe(ma.cert);
    expect(Object.keys(s.data).sort()).toEqual(['ca-bundle.crt', 'ca.crt', 'ca.key', 'tls.crt', 'tls.key']);
    expect(certFacts(ma.cert).dnsNames).toContain('dbguard-operator.dbguard-system.svc');
    await expect(handshake(ma, ma.caBundle, 'dbguard-operator.dbguard-system.svc')).resolves.toBeTruthy();
    expect(
      api.requests.filter((r) => r.verb === 'create' && r.resource === 'secrets').length,
    ).toBeGreaterThanOrEqual(1);
  });

  it('renews before expiry (leader), followers pick it up, and the caBundle is written to the webhook configuration', async () => {
    const metrics = new OperatorMetrics({ defaultMetrics: false });
    const leader = make({
      secretName: 'rotate-tls',
      certValidityMs: 6000,
      checkIntervalMs: 300,
      metrics,
      webhookConfigs: [
        {
          kind: 'Mutating',
          name: 'dbguard-sidecar-injector',
          create: (ca) => injectionWebhookConfiguration({ operatorNamespace: NS, caBundlePem: ca }),
        },
      ],
    });
    let followerChanges = 0;
    const follower = make({
      secretName: 'rotate-tls',
      isLeader: () => false,
      certValidityMs: 6000,
      checkIntervalMs: 300,
    });
    const first = await leader.start();
    await follower.start();
    follower.onChange(() => followerChanges++);
    const firstExpiry = (await metrics.certExpiry.get()).values[0]!.value;
    expect(firstExpiry).toBe(Math.floor(first.notAfter.getTime() / 1000));

    const cfg = await until('webhook configuration', () =>
      api.store.get<any>(
        'admissionregistration.k8s.io/v1',
        'MutatingWebhookConfiguration',
        undefined,
        'dbguard-sidecar-injector',
      ),
    );
    expect(Buffer.from(cfg.webhooks[0].clientConfig.caBundle, 'base64').toString()).toBe(first.caBundle);

    // renewal once less than a third of the 6 s is left: a new serving certificate from the same CA
    const renewed = await until(
      'renewal',
      () => (leader.current()!.cert !== first.cert ? leader.current() : undefined),
      10_000,
    );
    expect(renewed.caBundle).toBe(first.caBundle);
    expect(certFacts(renewed.cert).notAfter.getTime()).toBeGreaterThan(first.notAfter.getTime());
    expect(leafMatches(renewed.cert, renewed.key, first.caBundle)).toBe(true);
    expect((await metrics.certExpiry.get()).values[0]!.value).toBeGreaterThan(firstExpiry);
    await until(
      'follower adopts',
      () => follower.current()!.cert === leader.current()!.cert || undefined,
      5000,
    );
    expect(followerChanges).toBeGreaterThanOrEqual(1);
  });

  it('a follower never renews, even a certificate close to expiry', async () => {
    const seed = make({
      secretName: 'follower-tls',
      certValidityMs: 60_000,
      caValidityMs: 120_000,
      checkIntervalMs: 200,
    });
    const m = await seed.start();
    await seed.stop();
    const rv = secret('follower-tls').metadata.resourceVersion;
    // with a renewal threshold of 99.9% the certificate is "due" at once; only a leader may act on it
    const follower = make({
      secretName: 'follower-tls',
      isLeader: () => false,
      renewBeforeFraction: 0.999,
      checkIntervalMs: 200,
    });
    expect((await follower.start()).cert).toBe(m.cert);
    await new Promise((r) => setTimeout(r, 800));
    expect(secret('follower-tls').metadata.resourceVersion).toBe(rv);
  });

  it('rotates the CA before it expires and trusts old and new CA during the overlap', async () => {
    const leader = make({
      secretName: 'ca-rotate-tls',
      caValidityMs: 6000,
      certValidityMs: 6000,
      checkIntervalMs: 300,
      label: 'dbguard.io/webhook-ca=operator',
    });
    // a second webhook (e.g. the approvals webhook) opted in by label
    await api.store.put({
      apiVersion: 'admissionregistration.k8s.io/v1',
      kind: 'ValidatingWebhookConfiguration',
      metadata: { name: 'dbguard-approvals', labels: { 'dbguard.io/webhook-ca': 'operator' } },
      webhooks: [
        {
          name: 'approvals.dbguard.io',
          admissionReviewVersions: ['v1'],
          sideEffects: 'None',
          clientConfig: { service: { namespace: NS, name: 'dbguard-operator', path: '/approvals' } },
          rules: [
            {
              operations: ['UPDATE'],
              apiGroups: ['dbguard.io'],
              apiVersions: ['*'],
              resources: ['approvalrequests'],
            },
          ],
        },
      ],
    } as any);
    const first = await leader.start();
    const oldCa = splitPemBundle(first.caBundle);
    expect(oldCa).toHaveLength(1);
    const rotated = await until(
      'CA rotation',
      () => (splitPemBundle(leader.current()!.caBundle).length === 2 ? leader.current() : undefined),
      10_000,
    );
    const [newCa, keptOld] = splitPemBundle(rotated.caBundle);
    expect(keptOld).toBe(oldCa[0]);
    expect(newCa).not.toBe(oldCa[0]);
    expect(leafMatches(rotated.cert, rotated.key, newCa!)).toBe(true);
    await expect(
      handshake(rotated, rotated.caBundle, 'dbguard-operator.dbguard-system.svc'),
    ).resolves.toBeTruthy();
    const approvals = await until('caBundle on the labelled configuration', () => {
      const v = api.store.get<any>(
        'admissionregistration.k8s.io/v1',
        'ValidatingWebhookConfiguration',
        undefined,
        'dbguard-approvals',
      );
      const b = v?.webhooks?.[0]?.clientConfig?.caBundle;
      return b && splitPemBundle(Buffer.from(b, 'base64').toString()).length === 2 ? b : undefined;
    });
    expect(approvals).toBeTruthy();
  });

  it('replaces a Secret that holds garbage (leader) instead of crashing', async () => {
    await api.store.put({
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: 'broken-tls', namespace: NS },
      data: { 'tls.crt': Buffer.from('not a certificate').toString('base64') },
    } as any);
    const m = make({ secretName: 'broken-tls' });
    const got = await m.start();
    expect(leafMatches(got.cert, got.key, pem(secret('broken-tls'), 'ca.crt'))).toBe(true);
  });
});
