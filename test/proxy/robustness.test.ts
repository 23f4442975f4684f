/**
 * Hostile and slow clients: malformed, truncated, oversized and random frontend messages close
 * that one connection with 08P01 while others keep working; a client that stops reading makes the
 * proxy stop reading the server instead of holding the result in memory.
 */
import net from 'node:net';
import fc from 'fast-check';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  cstring,
  errorFields,
  int16,
  msg,
  pgClient,
  RawConn,
  startTestProxy,
  startupMessage,
  type TestProxy,
  via,
} from './helpers.js';

let proxy: TestProxy;
let witness: pg.Client;
beforeAll(async () => {
  proxy = await startTestProxy({ maxMessageSize: 64 * 1024 });
  witness = await pgClient(via(proxy));
});
afterAll(async () => {
  await witness.end();
  await proxy.close();
});

async function witnessWorks() {
  const r = await witness.query('select 42 as v');
  expect(r.rows[0].v).toBe(42);
}

async function expectViolation(payload: Buffer) {
  const { conn } = await RawConn.login(via(proxy));
  conn.send(payload);
  const msgs = await conn.readToClose(5000);
  const e = msgs.find((m) => m.type === 'E');
  expect(e, `got ${msgs.map((m) => m.type).join('')}`).toBeDefined();
  expect(errorFields(e!.body)).toMatchObject({ S: 'FATAL', C: '08P01' });
  expect(conn.closed).toBe(true);
  await witnessWorks();
  return errorFields(e!.body).M;
}

const rawHeader = (type: string, length: number) => {
  const b = Buffer.alloc(5);
  b.write(type, 0, 'latin1');
  b.writeInt32BE(length, 1);
  return b;
};

describe('malformed frontend messages', () => {
  it('an unknown message type', async () => {
    expect(await expectViolation(msg('Z'))).toMatch(/invalid frontend message type/);
  });

  it('a length below 4', async () => {
    expect(await expectViolation(rawHeader('Q', 2))).toMatch(/invalid frontend message length/);
  });

  it('a Parse missing its fields', async () => {
    expect(await expectViolation(msg('P', cstring('stmt')))).toMatch(
      /Parse: (unterminated string|message truncated)/,
    );
  });

  it('a Bind whose parameter runs past the end', async () => {
    const body = Buffer.concat([
      cstring(''),
      cstring(''),
      int16(0),
      int16(1),
      Buffer.from([0, 0, 0, 100]),
      Buffer.from('abc'),
    ]);
    expect(await expectViolation(msg('B', body))).toMatch(/Bind: message truncated/);
  });

  it('a Query with bytes after its terminator', async () => {
    expect(await expectViolation(msg('Q', Buffer.from('select 1\0junk')))).toMatch(/trailing bytes/);
  });

  it('an oversized message is refused from its header, before its body arrives', async () => {
    expect(await expectViolation(rawHeader('Q', 10 * 1024 * 1024))).toMatch(/too large/);
  });

  it('an oversized query sent whole', async () => {
    expect(await expectViolation(msg('Q', cstring(`select '${'x'.repeat(100_000)}'`)))).toMatch(/too large/);
  });

  it('a message after Terminate-less garbage in the start-up packet', async () => {
    const conn = await RawConn.open(via(proxy));
    conn.send(Buffer.from([0, 0, 0, 9, 0x12, 0x34, 0x56, 0x78, 0]));
    const msgs = await conn.readToClose(5000);
    expect(msgs[0]?.type).toBe('E');
    expect(errorFields(msgs[0]!.body).C).toBe('0A000');
    await witnessWorks();
  });

  it('a non-password message during authentication', async () => {
    const conn = await RawConn.open(via(proxy));
    conn.send(startupMessage({ user: 'app', database: 'app' }));
    const [r] = await conn.readUntil('R');
    expect(r!.body.readInt32BE(0)).toBe(10); // SASL
    conn.send(msg('Q', cstring('select 1')));
    const msgs = await conn.readToClose(5000);
    expect(errorFields(msgs.find((m) => m.type === 'E')!.body).C).toBe('08P01');
    await witnessWorks();
  });

  it('random bytes after login or as the start-up packet never take the proxy down', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.uint8Array({ minLength: 1, maxLength: 300 }),
        fc.boolean(),
        async (bytes, afterLogin) => {
          const conn = afterLogin ? (await RawConn.login(via(proxy))).conn : await RawConn.open(via(proxy));
          conn.send(Buffer.from(bytes));
          await new Promise((r) => setTimeout(r, 30));
          conn.close();
          await witnessWorks();
        },
      ),
      { numRuns: 40 },
    );
    expect(proxy.logs.filter((l) => l.level === 'error')).toEqual([]);
  });
});

describe('backpressure', () => {
  it('a client that stops reading pauses the upstream instead of filling the proxy memory', async () => {
    const rows = 100_000;
    const sock = net.connect(proxy.port, proxy.host);
    await new Promise((r) => sock.once('connect', r));
    // Count DataRows with a streaming parser (no buffering of the whole result in the test either).
    let pending: Buffer = Buffer.alloc(0);
    let dataRows = 0;
    let bytes = 0;
    let onReady: (() => void) | null = null;
    sock.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
      pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
      let pos = 0;
      while (pending.length - pos >= 5) {
        const len = pending.readInt32BE(pos + 1);
        if (pending.length - pos < 1 + len) break;
        const t = pending[pos];
        if (t === 0x44) dataRows++;
        if (t === 0x5a) {
          onReady?.();
        }
        pos += 1 + len;
      }
      pending = pending.subarray(pos);
    });
    sock.write(startupMessage({ user: 'trustuser', database: 'app' }));
    await new Promise<void>((r) => {
      onReady = r;
    });
    sock.pause();
    const before = process.memoryUsage().arrayBuffers;
    sock.write(msg('Q', cstring(`select repeat('x', 1000) from generate_series(1, ${rows})`)));
    await new Promise((r) => setTimeout(r, 2000));
    const grown = process.memoryUsage().arrayBuffers - before;
    // ~100 MB of result: the proxy may hold a few socket buffers, not the result.
    expect(grown).toBeLessThan(32 * 1024 * 1024);
    const done = new Promise<void>((r) => {
      onReady = r;
    });
    sock.resume();
    await done;
    expect(dataRows).toBe(rows);
    expect(bytes).toBeGreaterThan(rows * 1000);
    sock.destroy();
  });
});
