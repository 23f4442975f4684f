/**
 * Awaitable reads from a socket for the short start-up and authentication phases, where the proxy
 * talks in lock step. Once a session relays, it detaches the reader and takes over the bytes left.
 */
import type { Duplex } from 'node:stream';
import { ProtocolViolation } from './codec.js';

export class SocketClosed extends Error {
  constructor(what: string) {
    super(`${what} closed the connection`);
    this.name = 'SocketClosed';
  }
}

export class ReadTimeout extends Error {
  constructor(what: string) {
    super(`timed out waiting for ${what}`);
    this.name = 'ReadTimeout';
  }
}

export class SocketReader {
  private buf: Buffer = Buffer.alloc(0);
  private wake: (() => void) | null = null;
  private closed = false;
  private failure: Error | null = null;
  private readonly onData = (chunk: Buffer) => {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    this.notify();
  };
  private readonly onEnd = () => {
    this.closed = true;
    this.notify();
  };
  private readonly onError = (err: Error) => {
    this.failure = err;
    this.notify();
  };

  constructor(
    private readonly sock: Duplex,
    /** `client` or `upstream`, for messages */
    private readonly who: string,
  ) {
    sock.on('data', this.onData);
    sock.on('end', this.onEnd);
    sock.on('close', this.onEnd);
    sock.on('error', this.onError);
    // A socket handed over paused (an upstream after its SSL negotiation) would never emit 'data'.
    sock.resume();
  }

  private notify(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  get buffered(): number {
    return this.buf.length;
  }

  private async need(n: number, timeoutMs: number): Promise<void> {
    if (this.buf.length >= n) return;
    const deadline = Date.now() + timeoutMs;
    while (this.buf.length < n) {
      if (this.failure) throw this.failure;
      if (this.closed) throw new SocketClosed(this.who);
      const left = deadline - Date.now();
      if (left <= 0) throw new ReadTimeout(`the ${this.who}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
  }

  private take(n: number): Buffer {
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  /** One untyped start-up packet; returns what follows the length field (code + payload). */
  async startupPacket(maxLength: number, timeoutMs: number): Promise<Buffer> {
    await this.need(4, timeoutMs);
    const len = this.buf.readInt32BE(0);
    if (len < 8 || len > maxLength) throw new ProtocolViolation(`invalid length of startup packet (${len})`);
    await this.need(len, timeoutMs);
    return this.take(len).subarray(4);
  }

  /** One typed message. */
  async message(
    maxBodyLength: number,
    timeoutMs: number,
  ): Promise<{ type: number; raw: Buffer; body: Buffer }> {
    await this.need(5, timeoutMs);
    const type = this.buf[0]!;
    const len = this.buf.readInt32BE(1);
    if (len < 4 || len - 4 > maxBodyLength) {
      throw new ProtocolViolation(`invalid ${this.who} message length ${len}`);
    }
    await this.need(1 + len, timeoutMs);
    const raw = this.take(1 + len);
    return { type, raw, body: raw.subarray(5) };
  }

  /** One raw byte (the answer to SSLRequest / GSSENCRequest). */
  async byte(timeoutMs: number): Promise<number> {
    await this.need(1, timeoutMs);
    return this.take(1)[0]!;
  }

  /** Stops reading and returns the bytes received but not consumed. The socket is left paused. */
  detach(): Buffer {
    this.sock.off('data', this.onData);
    this.sock.off('end', this.onEnd);
    this.sock.off('close', this.onEnd);
    this.sock.off('error', this.onError);
    this.sock.pause();
    const rest = this.buf;
    this.buf = Buffer.alloc(0);
    return rest;
  }
}
