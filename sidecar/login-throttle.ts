/**
 * A per-client-address limit on failed logins: after `limit` failures from one address within
 * `windowMs`, further start-ups from that address are refused right after their start-up packet,
 * before any upstream connection is opened, until the oldest of those failures leaves the window.
 * It slows password and token guessing, and keeps a guesser from making the database authenticate
 * for it (relay mode) or from filling the proxy's slots.
 *
 * The address is the peer IP without the port: a new port per attempt must not reset the count.
 * Behind a NAT or in a pod (every client is 127.0.0.1) one address is many clients: a client that
 * keeps failing locks its neighbours out too, which is the price of a limit that cannot be dodged.
 */
import type { Logger } from './log.js';

/** SQLSTATE of the refusal: invalid_authorization_specification, like other login refusals. */
export const LOGIN_THROTTLED_SQLSTATE = '28000';
/** Addresses remembered at most; beyond, the address seen least recently is forgotten first. */
const MAX_ADDRESSES = 10_000;

export class LoginThrottle {
  /** failure times per address, oldest first, at most `limit` of them */
  private readonly failures = new Map<string, number[]>();
  private refused = 0;
  private lastLog = 0;

  constructor(
    /** failures allowed per window; 0: no limit */
    readonly limit: number,
    readonly windowMs: number,
    private readonly logger?: Logger,
    private readonly now: () => number = Date.now,
  ) {}

  get enabled(): boolean {
    return this.limit > 0 && this.windowMs > 0;
  }

  /** Milliseconds until `addr` may try again; 0 when it may now. */
  blockedFor(addr: string): number {
    if (!this.enabled) return 0;
    const list = this.failures.get(addr);
    if (!list || list.length < this.limit) return 0;
    const wait = list[0]! + this.windowMs - this.now();
    if (wait <= 0) return 0;
    this.refused++;
    // One line per 10 s at most: a guessing flood must not become a log flood.
    const t = this.now();
    if (t - this.lastLog >= 10_000) {
      this.logger?.log('warn', 'login refused: too many failed logins from this address', {
        clientAddr: addr,
        limit: this.limit,
        windowMs: this.windowMs,
        refusedSinceLastLine: this.refused,
      });
      this.refused = 0;
      this.lastLog = t;
    }
    return wait;
  }

  /** Records one failed login from `addr`. */
  fail(addr: string): void {
    if (!this.enabled) return;
    const t = this.now();
    const list = (this.failures.get(addr) ?? []).filter((x) => x > t - this.windowMs);
    list.push(t);
    if (list.length > this.limit) list.splice(0, list.length - this.limit);
    this.failures.delete(addr); // re-inserted last: the Map's order is least recently seen first
    this.failures.set(addr, list);
    if (this.failures.size > MAX_ADDRESSES) {
      const oldest = this.failures.keys().next().value;
      if (oldest !== undefined) this.failures.delete(oldest);
    }
  }

  message(addr: string, waitMs: number): string {
    return `dbguard: too many failed logins from ${addr} (${this.limit} within ${Math.round(this.windowMs / 1000)}s); try again in ${Math.ceil(waitMs / 1000)}s`;
  }
}
