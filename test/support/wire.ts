/**
 * The PostgreSQL wire protocol by hand, for tests and benchmarks that must send what no driver sends
 * (damaged frames, odd message orders, cancel keys) and read every message that comes back.
 */
import net from 'node:net';

/** Where to connect: a server, a proxy or a pooler. */
export interface Endpoint {
  host: string;
  port: number;
}

export function startupMessage(params: Record<string, string>, version = 3 << 16): Buffer {
  const parts: Buffer[] = [];
  for (const [k, v] of Object.entries(params)) parts.push(Buffer.from(`${k}\0${v}\0`));
  parts.push(Buffer.from([0]));
  const payload = Buffer.concat(parts);
  const out = Buffer.alloc(8 + payload.length);
  out.writeInt32BE(8 + payload.length, 0);
  out.writeInt32BE(version, 4);
  payload.copy(out, 8);
  return out;
}

export function msg(type: string, body: Buffer = Buffer.alloc(0)): Buffer {
  const out = Buffer.alloc(5 + body.length);
  out.write(type, 0, 'latin1');
  out.writeInt32BE(4 + body.length, 1);
  body.copy(out, 5);
  return out;
}

export interface RawMessage {
  type: string;
  body: Buffer;
}

/** A raw protocol connection: send bytes, read typed messages. */
export class RawConn {
  private buf = Buffer.alloc(0);
  private waiters: (() => void)[] = [];
  closed = false;
  private constructor(readonly sock: net.Socket) {
    sock.on('data', (d) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.wake();
    });
    sock.on('close', () => {
      this.closed = true;
      this.wake();
    });
    sock.on('error', () => {});
  }
  private wake() {
    for (const w of this.waiters.splice(0)) w();
  }
  static async open(t: Endpoint): Promise<RawConn> {
    const sock = net.connect(t.port, t.host);
    await new Promise<void>((resolve, reject) => {
      sock.once('connect', () => resolve());
      sock.once('error', reject);
    });
    return new RawConn(sock);
  }
  /** Connects and logs in as trustuser; returns after the first ReadyForQuery. */
  static async login(
    t: Endpoint,
    version = 3 << 16,
    extra: Record<string, string> = {},
  ): Promise<{ conn: RawConn; messages: RawMessage[] }> {
    const conn = await RawConn.open(t);
    conn.send(startupMessage({ user: 'trustuser', database: 'app', ...extra }, version));
    const messages = await conn.readUntil('Z');
    return { conn, messages };
  }
  send(b: Buffer) {
    this.sock.write(b);
  }
  async next(timeoutMs = 10_000): Promise<RawMessage | null> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.buf.length >= 5) {
        const len = this.buf.readInt32BE(1);
        if (this.buf.length >= 1 + len) {
          const m = { type: String.fromCharCode(this.buf[0]!), body: this.buf.subarray(5, 1 + len) };
          this.buf = this.buf.subarray(1 + len);
          return m;
        }
      }
      if (this.closed) return null;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error('timed out waiting for a message');
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }
  async readUntil(type: string, timeoutMs = 10_000): Promise<RawMessage[]> {
    const out: RawMessage[] = [];
    for (;;) {
      const m = await this.next(timeoutMs);
      if (!m) throw new Error(`connection closed before ${type}; got ${out.map((x) => x.type).join('')}`);
      out.push(m);
      if (m.type === type) return out;
    }
  }
  /** Reads until the connection closes; returns everything received. */
  async readToClose(timeoutMs = 10_000): Promise<RawMessage[]> {
    const out: RawMessage[] = [];
    for (;;) {
      const m = await this.next(timeoutMs);
      if (!m) return out;
      out.push(m);
    }
  }
  close() {
    this.sock.destroy();
  }
}

export function errorFields(body: Buffer): Record<string, string> {
  const out: Record<string, string> = {};
  let pos = 0;
  while (pos < body.length && body[pos] !== 0) {
    const code = String.fromCharCode(body[pos]!);
    const end = body.indexOf(0, pos + 1);
    out[code] = body.toString('utf8', pos + 1, end);
    pos = end + 1;
  }
  return out;
}

export const cstring = (s: string) => Buffer.from(`${s}\0`);
export const int16 = (n: number) => {
  const b = Buffer.alloc(2);
  b.writeInt16BE(n);
  return b;
};
export const int32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n);
  return b;
};
