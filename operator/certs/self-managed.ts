/**
 * Self-managed webhook certificates: the operator keeps its own CA and serving certificate in a Secret in
 * its namespace, fills the caBundle of its webhook configurations, and renews before expiry.
 *
 * - Any replica may create the Secret when none exists (create is atomic: the loser adopts the winner's).
 * - Only the leader renews and writes caBundles, so replicas never race on rotation.
 * - Every replica re-reads the Secret on each check and hot-swaps its listener's certificate.
 * - A renewed CA is trusted next to the old one (caBundle holds both) until the old one expires, so pods and
 *   API servers that still hold the old bundle keep working through the rotation.
 */
import * as k8s from '@kubernetes/client-node';
import type { OperatorMetrics } from '../metrics.js';
import type { TlsMaterial, TlsSource } from './types.js';
import { certFacts, createCa, issueServing, type KeyPairPem, leafMatches, splitPemBundle } from './x509.js';

export const DEFAULT_SECRET_NAME = 'dbguard-webhook-tls';
const DAY = 24 * 3600_000;

export interface SelfManagedOptions {
  kubeConfig: k8s.KubeConfig;
  /** the operator's namespace (Secret, Service) */
  namespace: string;
  serviceName: string;
  secretName?: string;
  isLeader: () => boolean;
  metrics?: OperatorMetrics;
  log?: (f: Record<string, unknown>) => void;
  /** default 5 years */
  caValidityMs?: number;
  /** default 1 year */
  certValidityMs?: number;
  /** renew when less than this fraction of a certificate's lifetime remains (default 1/3) */
  renewBeforeFraction?: number;
  /** how often to check the Secret and the webhook configurations (default: certValidity/10, at most 1 h) */
  checkIntervalMs?: number;
  /**
   * webhook configurations to keep the caBundle of: by name (created from `create()` when missing, if given)
   * and every Mutating/ValidatingWebhookConfiguration labelled `label` (e.g. the approvals webhook)
   */
  webhookConfigs?: {
    kind: 'Mutating' | 'Validating';
    name: string;
    create?: (caBundlePem: string) => object;
  }[];
  label?: string;
}

interface Stored extends TlsMaterial {
  ca: KeyPairPem;
  resourceVersion?: string;
  caFacts: { notBefore: Date; notAfter: Date };
  leafFacts: { notBefore: Date; notAfter: Date; dnsNames: string[] };
}

const b64 = (s: string) => Buffer.from(s).toString('base64');
const unb64 = (s: string | undefined) => (s ? Buffer.from(s, 'base64').toString('utf8') : '');

export class SelfManagedCertificates implements TlsSource {
  private readonly core: k8s.CoreV1Api;
  private readonly admission: k8s.AdmissionregistrationV1Api;
  private readonly secretName: string;
  private readonly caValidityMs: number;
  private readonly certValidityMs: number;
  private readonly fraction: number;
  private readonly intervalMs: number;
  private material: Stored | undefined;
  private readonly listeners: ((m: TlsMaterial) => void)[] = [];
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;

  constructor(private readonly o: SelfManagedOptions) {
    this.core = o.kubeConfig.makeApiClient(k8s.CoreV1Api);
    this.admission = o.kubeConfig.makeApiClient(k8s.AdmissionregistrationV1Api);
    this.secretName = o.secretName ?? DEFAULT_SECRET_NAME;
    this.caValidityMs = o.caValidityMs ?? 5 * 365 * DAY;
    this.certValidityMs = o.certValidityMs ?? 365 * DAY;
    if (this.certValidityMs > this.caValidityMs)
      throw new Error('the serving certificate cannot outlive its CA');
    this.fraction = o.renewBeforeFraction ?? 1 / 3;
    if (!(this.fraction > 0 && this.fraction < 1))
      throw new Error('renewBeforeFraction must be between 0 and 1');
    this.intervalMs = o.checkIntervalMs ?? Math.min(3600_000, Math.max(1000, this.certValidityMs / 10));
  }

  /** the DNS names the API server and sidecars use for the operator's Service */
  get dnsNames(): string[] {
    const { serviceName: s, namespace: ns } = this.o;
    return [`${s}.${ns}.svc`, `${s}.${ns}.svc.cluster.local`, `${s}.${ns}`, s];
  }

  current(): TlsMaterial | undefined {
    return this.material;
  }

  onChange(cb: (m: TlsMaterial) => void): void {
    this.listeners.push(cb);
  }

  async start(): Promise<TlsMaterial> {
    // bounded by the caller's patience: a replica waits here until some replica has written a valid Secret
    for (let attempt = 0; !this.material; attempt++) {
      if (this.stopped) throw new Error('stopped before a certificate was available');
      await this.check();
      if (!this.material)
        await new Promise((r) => setTimeout(r, Math.min(this.intervalMs, 500 * 2 ** Math.min(attempt, 4))));
    }
    this.timer = setInterval(() => void this.check(), this.intervalMs);
    this.timer.unref();
    return this.material;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    await this.running;
  }

  /**
   * Leadership gained. The first round ran in start(), before any replica led, so it wrote no caBundle;
   * waiting for the next interval (up to 1 h) left the webhooks' caBundle empty and, with failurePolicy
   * Fail, every labelled pod rejected. A round in flight may have started as a follower: run one more.
   */
  leading(): void {
    if (this.stopped) return;
    void (async () => {
      await this.running;
      if (!this.stopped) await this.check();
    })();
  }

  /** One round: read, create or renew the Secret, adopt it, and (leader) write caBundles. Never throws. */
  check(): Promise<void> {
    if (!this.running)
      this.running = this.round()
        .catch((err) =>
          this.o.log?.({
            msg: 'webhook certificate check failed',
            error: String((err as Error)?.message ?? err),
          }),
        )
        .finally(() => {
          this.running = undefined;
        });
    return this.running;
  }

  private async round(): Promise<void> {
    const read = await this.readSecret();
    let stored: Stored | undefined;
    if (read.state === 'absent') {
      stored = await this.write(undefined, await this.generate(undefined));
    } else if (read.state === 'invalid') {
      // only the leader replaces a broken Secret; the others keep serving what they have
      if (this.o.isLeader()) stored = await this.write(read.resourceVersion, await this.generate(undefined));
    } else if (this.o.isLeader() && this.needsRenewal(read.stored)) {
      stored = await this.write(read.stored.resourceVersion, await this.generate(read.stored));
    } else stored = read.stored;
    if (stored) this.adopt(stored);
    if (this.o.isLeader() && this.material) await this.ensureCaBundles(this.material.caBundle);
  }

  private async readSecret(): Promise<
    { state: 'absent' } | { state: 'invalid'; resourceVersion?: string } | { state: 'ok'; stored: Stored }
  > {
    let secret: k8s.V1Secret;
    try {
      secret = await this.core.readNamespacedSecret({ name: this.secretName, namespace: this.o.namespace });
    } catch (err) {
      if ((err as { code?: number }).code === 404) return { state: 'absent' };
      throw err;
    }
    const d = secret.data ?? {};
    const ca = { certPem: unb64(d['ca.crt']), keyPem: unb64(d['ca.key']) };
    const cert = unb64(d['tls.crt']);
    const key = unb64(d['tls.key']);
    const caBundle = unb64(d['ca-bundle.crt']) || ca.certPem;
    const resourceVersion = secret.metadata?.resourceVersion;
    try {
      if (!leafMatches(cert, key, ca.certPem))
        throw new Error('tls.crt is not signed by ca.crt or does not match tls.key');
      const leafFacts = certFacts(cert);
      const caFacts = certFacts(ca.certPem);
      return {
        state: 'ok',
        stored: {
          ca,
          cert,
          key,
          caBundle,
          notAfter: leafFacts.notAfter,
          resourceVersion,
          leafFacts,
          caFacts,
        },
      };
    } catch (err) {
      this.o.log?.({
        msg: 'webhook certificate Secret unusable',
        secret: `${this.o.namespace}/${this.secretName}`,
        error: String((err as Error).message),
      });
      return { state: 'invalid', resourceVersion };
    }
  }

  private needsRenewal(s: Stored): boolean {
    const now = Date.now();
    const late = (f: { notBefore: Date; notAfter: Date }) =>
      f.notAfter.getTime() - now < this.fraction * (f.notAfter.getTime() - f.notBefore.getTime());
    return (
      late(s.leafFacts) || late(s.caFacts) || !this.dnsNames.every((n) => s.leafFacts.dnsNames.includes(n))
    );
  }

  private async generate(
    previous: Stored | undefined,
  ): Promise<{ ca: KeyPairPem; cert: KeyPairPem; bundle: string }> {
    const now = new Date();
    const usable = (f?: { notBefore: Date; notAfter: Date }) =>
      !!f &&
      f.notAfter.getTime() - now.getTime() >= this.fraction * (f.notAfter.getTime() - f.notBefore.getTime());
    const keepCa = previous?.ca?.keyPem && usable(previous.caFacts);
    const ca = keepCa
      ? previous.ca
      : await createCa(`dbguard-webhook-ca@${Math.floor(now.getTime() / 1000)}`, this.caValidityMs, now);
    const cert = await issueServing(ca, this.dnsNames, this.certValidityMs, now);
    // trust the new CA and every earlier one that has not expired yet
    const earlier = previous?.caBundle ? splitPemBundle(previous.caBundle) : [];
    const bundle = [
      ca.certPem,
      ...earlier.filter((pem) => pem.trim() !== ca.certPem.trim() && stillValid(pem, now)),
    ].join('');
    if (!keepCa)
      this.o.log?.({ msg: 'webhook CA created', secret: `${this.o.namespace}/${this.secretName}` });
    return { ca, cert, bundle };
  }

  /** create (resourceVersion undefined) or replace the Secret, then read back what is stored */
  private async write(
    resourceVersion: string | undefined,
    g: { ca: KeyPairPem; cert: KeyPairPem; bundle: string },
  ): Promise<Stored | undefined> {
    const body: k8s.V1Secret = {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: {
        name: this.secretName,
        namespace: this.o.namespace,
        labels: {
          'app.kubernetes.io/name': 'dbguard',
          'app.kubernetes.io/component': 'webhook-certificates',
        },
        ...(resourceVersion ? { resourceVersion } : {}),
      },
      type: 'Opaque',
      data: {
        'ca.crt': b64(g.ca.certPem),
        'ca.key': b64(g.ca.keyPem),
        'tls.crt': b64(g.cert.certPem),
        'tls.key': b64(g.cert.keyPem),
        'ca-bundle.crt': b64(g.bundle),
      },
    };
    try {
      if (resourceVersion)
        await this.core.replaceNamespacedSecret({ name: this.secretName, namespace: this.o.namespace, body });
      else await this.core.createNamespacedSecret({ namespace: this.o.namespace, body });
      this.o.log?.({
        msg: resourceVersion ? 'webhook certificate renewed' : 'webhook certificate created',
        notAfter: certFacts(g.cert.certPem).notAfter,
      });
    } catch (err) {
      // another replica won the race: use what it wrote
      if ((err as { code?: number }).code !== 409) throw err;
    }
    const after = await this.readSecret();
    return after.state === 'ok' ? after.stored : undefined;
  }

  private adopt(s: Stored): void {
    if (this.material && this.material.cert === s.cert && this.material.caBundle === s.caBundle) {
      this.material.resourceVersion = s.resourceVersion;
      return;
    }
    this.material = s;
    this.o.metrics?.certExpiry.set(Math.floor(s.notAfter.getTime() / 1000));
    for (const cb of this.listeners) {
      try {
        cb(s);
      } catch (err) {
        this.o.log?.({ msg: 'certificate listener failed', error: String((err as Error)?.message ?? err) });
      }
    }
  }

  private async ensureCaBundles(bundlePem: string): Promise<void> {
    const want = b64(bundlePem);
    const configs = this.o.webhookConfigs ?? [];
    const seen = new Set<string>();
    for (const c of configs) {
      seen.add(`${c.kind}/${c.name}`);
      const obj = await this.readConfig(c.kind, c.name);
      if (obj === null) {
        if (!c.create) continue;
        try {
          await this.createConfig(c.kind, c.create(bundlePem));
          this.o.log?.({ msg: 'webhook configuration created', name: c.name });
        } catch (err) {
          if ((err as { code?: number }).code !== 409) throw err;
        }
        continue;
      }
      await this.patchBundle(c.kind, obj, want);
    }
    if (!this.o.label) return;
    for (const kind of ['Mutating', 'Validating'] as const) {
      const list =
        kind === 'Mutating'
          ? await this.admission.listMutatingWebhookConfiguration({ labelSelector: this.o.label })
          : await this.admission.listValidatingWebhookConfiguration({ labelSelector: this.o.label });
      for (const obj of list.items)
        if (!seen.has(`${kind}/${obj.metadata?.name}`)) await this.patchBundle(kind, obj, want);
    }
  }

  private async readConfig(kind: 'Mutating' | 'Validating', name: string): Promise<any | null> {
    try {
      return kind === 'Mutating'
        ? await this.admission.readMutatingWebhookConfiguration({ name })
        : await this.admission.readValidatingWebhookConfiguration({ name });
    } catch (err) {
      if ((err as { code?: number }).code === 404) return null;
      throw err;
    }
  }

  private createConfig(kind: 'Mutating' | 'Validating', body: any) {
    return kind === 'Mutating'
      ? this.admission.createMutatingWebhookConfiguration({ body })
      : this.admission.createValidatingWebhookConfiguration({ body });
  }

  /** caBundle of every webhook that calls the operator's Service; a 409 is retried on the next round */
  private async patchBundle(kind: 'Mutating' | 'Validating', obj: any, want: string): Promise<void> {
    let changed = false;
    for (const w of obj.webhooks ?? []) {
      const svc = w.clientConfig?.service;
      if (!svc || svc.name !== this.o.serviceName || svc.namespace !== this.o.namespace) continue;
      if (w.clientConfig.caBundle !== want) {
        w.clientConfig.caBundle = want;
        changed = true;
      }
    }
    if (!changed) return;
    const name = obj.metadata.name;
    try {
      if (kind === 'Mutating') await this.admission.replaceMutatingWebhookConfiguration({ name, body: obj });
      else await this.admission.replaceValidatingWebhookConfiguration({ name, body: obj });
      this.o.log?.({ msg: 'webhook caBundle updated', kind, name });
    } catch (err) {
      if ((err as { code?: number }).code !== 409) throw err;
    }
  }
}

function stillValid(pem: string, now: Date): boolean {
  try {
    return certFacts(pem).notAfter.getTime() > now.getTime();
  } catch {
    return false;
  }
}
