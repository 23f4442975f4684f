/**
 * The sidecar's policy client (`dbguard proxy --operator-url`): pulls its compiled policy from the
 * operator and keeps enforcing when the operator is away.
 *
 * - Long-poll with If-None-Match, so a change arrives within one round trip of being compiled.
 * - Each policy received is checked (format, and the version must be the hash of its content), then
 *   written atomically to a last-known-good file (an emptyDir in the pod) before it is enforced, so a
 *   restarted sidecar enforces it at once even while the operator is down.
 * - Never a policy-less allow: until some policy is loaded, `current()` is undefined and the proxy
 *   refuses every statement and reports not ready.
 * - The projected ServiceAccount token is re-read for every request: the kubelet rotates it.
 */
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import { COMPILED_FORMAT, type CompiledPolicy } from '../api/compiled.js';
import { policyVersion } from '../api/version.js';

export interface PolicyClientOptions {
  operatorUrl: string;
  /** `namespace/name` */
  policy: string;
  /** file with the projected ServiceAccount token (audience dbguard) */
  tokenFile?: string;
  /** PEM CA that signed the operator's serving certificate */
  caFile?: string;
  /** last-known-good policy file */
  cacheFile?: string;
  /** long-poll wait in seconds (the operator caps it at 300) */
  waitSeconds?: number;
  onPolicy: (policy: CompiledPolicy, source: 'operator' | 'cache') => void;
  onSyncError?: (err: Error) => void;
  onSync?: () => void;
  log?: (fields: Record<string, unknown>) => void;
}

export class PolicyError extends Error {}

/** A compiled policy must be in our format and carry the hash of its own content. */
export function checkCompiledPolicy(value: unknown): CompiledPolicy {
  const p = value as CompiledPolicy;
  if (!p || typeof p !== 'object' || p.format !== COMPILED_FORMAT) {
    throw new PolicyError(`not a compiled policy (format must be ${COMPILED_FORMAT})`);
  }
  if (typeof p.version !== 'string' || policyVersion(p) !== p.version) {
    throw new PolicyError('compiled policy content does not match its version (corrupted or edited)');
  }
  return p;
}

function getJson(
  url: URL,
  headers: Record<string, string>,
  ca: string | undefined,
  timeoutMs: number,
  signal: AbortSignal,
): Promise<{ status: number; body: string; etag?: string }> {
  return new Promise((resolve, reject) => {
    const mod = url.protocol === 'https:' ? https : http;
    const req = mod.request(url, { method: 'GET', headers, ...(ca ? { ca } : {}), signal }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          body: Buffer.concat(chunks).toString('utf8'),
          etag: typeof res.headers.etag === 'string' ? res.headers.etag : undefined,
        }),
      );
      res.on('error', reject);
    });
    req.setTimeout(timeoutMs, () =>
      req.destroy(new Error(`no answer from the operator within ${timeoutMs} ms`)),
    );
    req.on('error', reject);
    req.end();
  });
}

export class PolicyClient {
  private policy: CompiledPolicy | undefined;
  private readonly abort = new AbortController();
  private loop: Promise<void> | undefined;
  lastSync: Date | undefined;

  constructor(private readonly opts: PolicyClientOptions) {}

  current(): CompiledPolicy | undefined {
    return this.policy;
  }

  /** Load the last-known-good file (if any), then start pulling in the background. */
  start(): void {
    this.loadCache();
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.abort.abort();
    await this.loop?.catch(() => undefined);
  }

  private loadCache(): void {
    const file = this.opts.cacheFile;
    if (!file || !fs.existsSync(file)) return;
    try {
      const p = checkCompiledPolicy(JSON.parse(fs.readFileSync(file, 'utf8')));
      if (p.policy !== this.opts.policy)
        throw new PolicyError(`cached policy is ${p.policy}, not ${this.opts.policy}`);
      this.accept(p, 'cache');
    } catch (err) {
      this.opts.log?.({
        msg: 'ignoring last-known-good policy file',
        file,
        error: String((err as Error).message),
      });
    }
  }

  private writeCache(p: CompiledPolicy): void {
    const file = this.opts.cacheFile;
    if (!file) return;
    try {
      fs.mkdirSync(path.dirname(file), { recursive: true });
      const tmp = `${file}.${process.pid}.tmp`;
      fs.writeFileSync(tmp, JSON.stringify(p), { mode: 0o600 });
      fs.renameSync(tmp, file);
    } catch (err) {
      this.opts.log?.({
        msg: 'cannot write last-known-good policy',
        file,
        error: String((err as Error).message),
      });
    }
  }

  private accept(p: CompiledPolicy, source: 'operator' | 'cache'): void {
    if (this.policy?.version === p.version) return;
    this.policy = p;
    this.opts.onPolicy(p, source);
  }

  private async run(): Promise<void> {
    const [ns, name] = this.opts.policy.split('/');
    const url = new URL(
      `/v1/policies/${encodeURIComponent(ns ?? '')}/${encodeURIComponent(name ?? '')}`,
      this.opts.operatorUrl,
    );
    const ca = this.opts.caFile ? fs.readFileSync(this.opts.caFile, 'utf8') : undefined;
    const wait = this.opts.waitSeconds ?? 60;
    let backoff = 500;
    while (!this.abort.signal.aborted) {
      try {
        const headers: Record<string, string> = { Accept: 'application/json' };
        if (this.opts.tokenFile)
          headers.Authorization = `Bearer ${fs.readFileSync(this.opts.tokenFile, 'utf8').trim()}`;
        if (this.policy) headers['If-None-Match'] = `"${this.policy.version}"`;
        // The first pull does not wait: a sidecar with no policy must get one as soon as possible.
        const w = this.policy ? wait : 0;
        url.searchParams.set('wait', String(w));
        const res = await getJson(url, headers, ca, (w + 15) * 1000, this.abort.signal);
        if (res.status === 200) {
          const p = checkCompiledPolicy(JSON.parse(res.body));
          if (p.policy !== this.opts.policy)
            throw new PolicyError(`operator sent ${p.policy}, not ${this.opts.policy}`);
          this.writeCache(p);
          this.accept(p, 'operator');
        } else if (res.status !== 304) {
          throw new PolicyError(`operator answered ${res.status}: ${res.body.slice(0, 300)}`);
        }
        this.lastSync = new Date();
        this.opts.onSync?.();
        backoff = 500;
      } catch (err) {
        if (this.abort.signal.aborted) return;
        this.opts.onSyncError?.(err as Error);
        this.opts.log?.({ msg: 'policy sync failed', error: String((err as Error).message) });
        await new Promise((r) => setTimeout(r, backoff).unref?.());
        backoff = Math.min(backoff * 2, 30_000);
      }
    }
  }
}
