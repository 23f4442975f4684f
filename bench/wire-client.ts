/**
 * A minimal PostgreSQL wire client for the benchmarks: log in (trust, cleartext or md5), run one
 * simple Query and count the rows and bytes without decoding them. A full driver would spend more
 * time building row objects than the proxy spends relaying them, hiding the figure being measured.
 */
import crypto from 'node:crypto';
import net from 'node:net';
import { errorFields, msg, startupMessage } from '../test/support/wire.js';

export interface WireLogin {
  host: string;
  port: number;
  user: string;
  database: string;
  password?: string;
}

export interface QueryResult {
  rows: number;
  bytes: number;
  ms: number;
  commandTag: string;
}

const md5 = (s: string | Buffer) => crypto.createHash('md5').update(s).digest('hex');

function errorText(body: Buffer): string {
  const f = errorFields(body);
  return `${f.S ?? 'ERROR'} ${f.C ?? ''}: ${f.M ?? '?'}`;
}

/**
 * One connection. Messages are scanned in place: only their type and length are read, except the
 * few the client must understand (authentication, errors, CommandComplete).
 */
export class WireClient {
  private sock!: net.Socket;
  private buf: Buffer = Buffer.alloc(0);
  private onMessage: ((type: number, body: Buffer) => void) | null = null;
  private failed: Error | null = null;
  private rejectWaiter: ((err: Error) => void) | null = null;

  static async connect(login: WireLogin, timeoutMs = 30_000): Promise<WireClient> {
    const c = new WireClient();
    await c.open(login, timeoutMs);
    return c;
  }

  private open(login: WireLogin, timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => fail(new Error(`login to ${login.port} timed out`)), timeoutMs);
      const fail = (err: Error) => {
        clearTimeout(timer);
        this.sock.destroy();
        reject(err);
      };
      this.sock = net.connect({ host: login.host, port: login.port });
      this.sock.setNoDelay(true);
      this.sock.on('error', (err) => this.abort(err));
      this.sock.on('close', () => this.abort(new Error('connection closed')));
      this.sock.on('data', (chunk: Buffer) => this.onData(chunk));
      this.rejectWaiter = fail;
      this.sock.once('connect', () =>
        this.sock.write(
          startupMessage({ user: login.user, database: login.database, application_name: 'dbguard-bench' }),
        ),
      );
      this.onMessage = (type, body) => {
        switch (type) {
          case 0x52: {
            // 'R' authentication request
            const code = body.readInt32BE(0);
            if (code === 0) return;
            if (code === 3) this.sock.write(msg('p', Buffer.from(`${login.password ?? ''}\0`)));
            else if (code === 5) {
              const inner = md5(`${login.password ?? ''}${login.user}`);
              const outer = md5(Buffer.concat([Buffer.from(inner), body.subarray(4, 8)]));
              this.sock.write(msg('p', Buffer.from(`md5${outer}\0`)));
            } else fail(new Error(`authentication method ${code} is not supported by the bench client`));
            return;
          }
          case 0x45: // 'E'
            fail(new Error(`login failed: ${errorText(body)}`));
            return;
          case 0x5a: // 'Z' ReadyForQuery
            clearTimeout(timer);
            this.rejectWaiter = null;
            this.onMessage = null;
            resolve();
            return;
          default:
            return; // ParameterStatus, BackendKeyData
        }
      };
    });
  }

  private abort(err: Error): void {
    if (this.failed) return;
    this.failed = err;
    this.rejectWaiter?.(err);
  }

  private onData(chunk: Buffer): void {
    let buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    let pos = 0;
    while (buf.length - pos >= 5) {
      const len = buf.readInt32BE(pos + 1);
      if (buf.length - pos < 1 + len) break;
      this.onMessage?.(buf[pos]!, buf.subarray(pos + 5, pos + 1 + len));
      pos += 1 + len;
    }
    buf = buf.subarray(pos);
    // keep a copy of a partial message only: never hold the received chunk alive longer than needed
    this.buf = buf.length ? Buffer.from(buf) : Buffer.alloc(0);
  }

  /** Runs one simple Query; rows and bytes are counted, not decoded. */
  query(sql: string, timeoutMs = 600_000): Promise<QueryResult> {
    if (this.failed) return Promise.reject(this.failed);
    return new Promise((resolve, reject) => {
      const t0 = performance.now();
      let rows = 0;
      let bytes = 0;
      let commandTag = '';
      let error: string | null = null;
      const timer = setTimeout(() => this.abort(new Error('query timed out')), timeoutMs);
      this.rejectWaiter = (err) => {
        clearTimeout(timer);
        reject(err);
      };
      this.onMessage = (type, body) => {
        bytes += 5 + body.length;
        if (type === 0x44) rows++;
        else if (type === 0x43) commandTag = body.toString('utf8', 0, body.length - 1);
        else if (type === 0x45) error = errorText(body);
        else if (type === 0x5a) {
          clearTimeout(timer);
          this.onMessage = null;
          this.rejectWaiter = null;
          if (error) reject(new Error(error));
          else resolve({ rows, bytes, ms: performance.now() - t0, commandTag });
        }
      };
      this.sock.write(msg('Q', Buffer.from(`${sql}\0`)));
    });
  }

  close(): void {
    this.failed ??= new Error('closed');
    if (!this.sock.destroyed) this.sock.end(msg('X', Buffer.alloc(0)));
    this.sock.destroy();
  }
}
