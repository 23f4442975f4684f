/**
 * Cancel keys. Every client gets a random BackendKeyData from the proxy; the server's real key
 * stays here. A CancelRequest carrying a proxy key is mapped to the real one and sent upstream on a
 * new connection, so a client can cancel only its own statements and never learns the server's key.
 */
import crypto from 'node:crypto';

export interface CancelTarget {
  /** sends the real CancelRequest upstream */
  cancel(): Promise<void>;
}

export class CancelRegistry {
  private readonly byPid = new Map<number, { secret: Buffer; target: CancelTarget }>();

  /** A fresh proxy key for a session; `secretLength` 4 for protocol 3.0, up to 256 for 3.2. */
  issue(target: CancelTarget, secretLength: number): { pid: number; secret: Buffer } {
    let pid: number;
    do {
      pid = crypto.randomInt(1, 0x7fffffff);
    } while (this.byPid.has(pid));
    const secret = crypto.randomBytes(secretLength);
    this.byPid.set(pid, { secret, target });
    return { pid, secret };
  }

  release(pid: number): void {
    this.byPid.delete(pid);
  }

  /** The session a CancelRequest names, when its key matches (compared in constant time). */
  lookup(pid: number, secret: Buffer): CancelTarget | undefined {
    const e = this.byPid.get(pid);
    if (!e || e.secret.length !== secret.length) return undefined;
    return crypto.timingSafeEqual(e.secret, secret) ? e.target : undefined;
  }

  get size(): number {
    return this.byPid.size;
  }
}
