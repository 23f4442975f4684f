/**
 * Test support for the proxy: start an in-process proxy in front of the test server, build client
 * configurations for the proxy and for the server directly, and a few raw-socket helpers.
 */
import net from 'node:net';
import pg from 'pg';
import postgres from 'postgres';
import { inject } from 'vitest';
import type { Logger, LogLevel } from '../../sidecar/log.js';
import { type ProxyHandle, type ProxyOptions, startProxy } from '../../sidecar/proxy.js';

export const server = () => inject('pg');

export interface TestProxy extends ProxyHandle {
  logs: { level: LogLevel; msg: string; fields?: Record<string, unknown> }[];
}

export async function startTestProxy(opts: Partial<ProxyOptions> = {}): Promise<TestProxy> {
  const s = server();
  const logs: TestProxy['logs'] = [];
  const logger: Logger = {
    log: (level, msg, fields) => logs.push({ level, msg, ...(fields ? { fields } : {}) }),
  };
  const proxy = await startProxy({
    upstream: { host: s.host, port: s.port, sslmode: 'disable' },
    logger,
    ...opts,
  });
  return Object.assign(proxy, { logs });
}

export interface Target {
  host: string;
  port: number;
}

export const direct = (): Target => ({ host: server().host, port: server().port });
export const via = (p: ProxyHandle): Target => ({ host: p.host, port: p.port });

export function pgConfig(t: Target, user = 'app', password = 'app', database = 'app'): pg.ClientConfig {
  return { host: t.host, port: t.port, user, password, database };
}

export async function pgClient(
  t: Target,
  user = 'app',
  password = 'app',
  database = 'app',
): Promise<pg.Client> {
  const c = new pg.Client(pgConfig(t, user, password, database));
  await c.connect();
  return c;
}

export function pgjs(t: Target, opts: postgres.Options<Record<string, postgres.PostgresType>> = {}) {
  return postgres({
    host: t.host,
    port: t.port,
    user: 'app',
    password: 'app',
    database: 'app',
    max: 1,
    onnotice: () => {},
    ...opts,
  });
}

export function url(t: Target, user = 'app', password = 'app', database = 'app'): string {
  return `postgres://${user}:${password}@${t.host}:${t.port}/${database}`;
}

/** A unique, lower-case name for this test's tables. */
export function uniq(prefix: string): string {
  return `${prefix}_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
}

// ------------------------------------------------------------------ raw protocol helpers

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
  static async open(t: Target): Promise<RawConn> {
    const sock = net.connect(t.port, t.host);
    await new Promise<void>((resolve, reject) => {
      sock.once('connect', () => resolve());
      sock.once('error', reject);
    });
    return new RawConn(sock);
  }
  /** Connects and logs in as trustuser; returns after the first ReadyForQuery. */
  static async login(
    t: Target,
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
