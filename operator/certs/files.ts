/**
 * Certificates from files: `--tls-cert`/`--tls-key` provided by the deployer, typically a Secret that
 * cert-manager issues and renews (its CA injector then fills the webhook's caBundle). The files are re-read
 * periodically, so a renewal reaches the listener without a restart.
 */
import fs from 'node:fs';
import type { OperatorMetrics } from '../metrics.js';
import type { TlsMaterial, TlsSource } from './types.js';
import { certFacts } from './x509.js';

export interface FileCertificatesOptions {
  certFile: string;
  keyFile: string;
  /** PEM CA the sidecars should trust (cert-manager writes `ca.crt` next to `tls.crt`) */
  caFile?: string;
  pollMs?: number;
  metrics?: OperatorMetrics;
  log?: (f: Record<string, unknown>) => void;
}

export class FileCertificates implements TlsSource {
  private material: TlsMaterial | undefined;
  private readonly listeners: ((m: TlsMaterial) => void)[] = [];
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly o: FileCertificatesOptions) {}

  current(): TlsMaterial | undefined {
    return this.material;
  }

  onChange(cb: (m: TlsMaterial) => void): void {
    this.listeners.push(cb);
  }

  async start(): Promise<TlsMaterial> {
    this.material = this.read();
    this.o.metrics?.certExpiry.set(Math.floor(this.material.notAfter.getTime() / 1000));
    this.timer = setInterval(() => this.poll(), this.o.pollMs ?? 30_000);
    this.timer.unref();
    return this.material;
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
  }

  private read(): TlsMaterial {
    const cert = fs.readFileSync(this.o.certFile, 'utf8');
    const key = fs.readFileSync(this.o.keyFile, 'utf8');
    const caBundle =
      this.o.caFile && fs.existsSync(this.o.caFile) ? fs.readFileSync(this.o.caFile, 'utf8') : '';
    return { cert, key, caBundle, notAfter: certFacts(cert).notAfter };
  }

  private poll(): void {
    try {
      const next = this.read();
      if (
        next.cert === this.material?.cert &&
        next.key === this.material?.key &&
        next.caBundle === this.material?.caBundle
      )
        return;
      this.material = next;
      this.o.metrics?.certExpiry.set(Math.floor(next.notAfter.getTime() / 1000));
      this.o.log?.({ msg: 'serving certificate reloaded', file: this.o.certFile, notAfter: next.notAfter });
      for (const cb of this.listeners) cb(next);
    } catch (err) {
      // mid-rotation the key and certificate may briefly disagree: keep the old pair and try again later
      this.o.log?.({
        msg: 'serving certificate not reloaded',
        error: String((err as Error)?.message ?? err),
      });
    }
  }
}
