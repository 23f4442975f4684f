/**
 * Cancel through the proxy: a CancelRequest carrying the proxy's key for a session is mapped to
 * the server's real key and sent upstream on a new connection; a wrong key cancels nothing.
 */
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DecisionPoint, Verdict } from '../../sidecar/decision-point.js';
import { untilActive } from '../support/activity.js';
import { until } from '../support/until.js';
import {
  cstring,
  errorFields,
  msg,
  pgjs,
  RawConn,
  server,
  startTestProxy,
  type TestProxy,
  via,
} from './helpers.js';

let proxy: TestProxy;
beforeAll(async () => {
  proxy = await startTestProxy();
});
afterAll(async () => {
  await proxy.close();
});

function sendCancel(port: number, pid: number, secret: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => {
      const pkt = Buffer.alloc(12 + secret.length);
      pkt.writeInt32BE(pkt.length, 0);
      pkt.writeInt32BE(80877102, 4);
      pkt.writeInt32BE(pid, 8);
      secret.copy(pkt, 12);
      s.end(pkt);
    });
    s.on('error', reject);
    s.on('close', () => resolve());
    s.resume();
  });
}

/** A raw session and the cancel key (BackendKeyData) the proxy gave it. */
async function loginWithKey(t: { host: string; port: number }) {
  const { conn, messages } = await RawConn.login(t);
  const k = messages.find((m) => m.type === 'K')!;
  return { conn, pid: k.body.readInt32BE(0), secret: Buffer.from(k.body.subarray(4)) };
}

describe('cancel', () => {
  it('postgres.js cancels a running pg_sleep(20) with 57014 within seconds', async () => {
    const sql = pgjs(via(proxy));
    await sql`select 1`;
    const started = Date.now();
    const q = sql`select pg_sleep(20) as cancel_me`;
    q.execute();
    await untilActive(server(), 'select pg_sleep(20) as cancel_me');
    q.cancel();
    await expect(q).rejects.toMatchObject({ code: '57014' });
    expect(Date.now() - started).toBeLessThan(5000);
    // the session goes on
    expect((await sql`select 2 as n`)[0]!.n).toBe(2);
    await sql.end();
  });

  it('a raw CancelRequest with the proxy key cancels; a wrong key does not', async () => {
    const { conn, pid, secret } = await loginWithKey(via(proxy));
    conn.send(msg('Q', cstring('select pg_sleep(3)')));
    await untilActive(server(), 'select pg_sleep(3)');
    const wrong = Buffer.from(secret);
    wrong[0] = wrong[0]! ^ 0xff;
    await sendCancel(proxy.port, pid, wrong);
    const res = await conn.readUntil('Z');
    // not cancelled: the sleep ran its course (a cancelled one answers E, Z)
    expect(res.map((m) => m.type).join('')).toBe('TDCZ');

    conn.send(msg('Q', cstring('select pg_sleep(20)')));
    await untilActive(server(), 'select pg_sleep(20)');
    const t0 = Date.now();
    await sendCancel(proxy.port, pid, secret);
    const res2 = await conn.readUntil('Z');
    const e = res2.find((m) => m.type === 'E')!;
    expect(errorFields(e.body).C).toBe('57014');
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(proxy.logs.some((l) => l.msg.includes('unknown key'))).toBe(true);
    conn.close();
  });

  it("a session's own key cannot cancel another session, and keys cannot be mixed", async () => {
    const victim = await loginWithKey(via(proxy));
    const attacker = await loginWithKey(via(proxy));
    victim.conn.send(msg('Q', cstring('select pg_sleep(2) as victim')));
    await untilActive(server(), 'select pg_sleep(2) as victim');
    // the attacker's whole key (it cancels the attacker's own idle session: nothing), then the
    // victim's pid with the attacker's secret, and the attacker's pid with a guessed secret
    await sendCancel(proxy.port, attacker.pid, attacker.secret);
    await sendCancel(proxy.port, victim.pid, attacker.secret);
    await sendCancel(proxy.port, attacker.pid, victim.secret.subarray(0, 2));
    const res = await victim.conn.readUntil('Z');
    expect(res.map((m) => m.type).join('')).toBe('TDCZ'); // ran its course
    // the attacker's session is unharmed too
    attacker.conn.send(msg('Q', cstring('select 1')));
    expect((await attacker.conn.readUntil('Z')).map((m) => m.type).join('')).toBe('TDCZ');
    victim.conn.close();
    attacker.conn.close();
  });

  it('a cancel that arrives before a slow judge asks for its wait signal still aborts that signal', async () => {
    // The signal is made only when a judge asks for it; a cancel before that must not be lost.
    const seen: (string | undefined)[] = [];
    let judging = 0;
    const dp: DecisionPoint = {
      judge(sql, s): Verdict | Promise<Verdict> {
        if (!sql.includes('hold_me')) return { action: 'forward', sql };
        judging++;
        return new Promise((resolve) =>
          setTimeout(() => {
            const signal = s.waitSignal;
            seen.push(signal?.aborted ? String(signal.reason) : 'not aborted');
            resolve(
              signal?.aborted
                ? { action: 'reject', sqlstate: '57014', message: 'canceling statement due to user request' }
                : { action: 'forward', sql },
            );
          }, 400),
        );
      },
      judgeFunctionCall: () => ({ action: 'reject', sqlstate: '42501', message: 'not in this test' }),
    };
    const p = await startTestProxy({ decisionPoint: dp });
    try {
      const { conn, pid, secret } = await loginWithKey(via(p));
      conn.send(msg('Q', cstring('select 1 as hold_me')));
      await until('the judge started', () => judging === 1); // it asks for its signal 400 ms later
      await sendCancel(p.port, pid, secret);
      const res = await conn.readUntil('Z');
      expect(errorFields(res.find((m) => m.type === 'E')!.body).C).toBe('57014');
      expect(seen).toEqual(['cancel']);
      // the next judge starts with a fresh, unaborted signal
      conn.send(msg('Q', cstring('select 2 as hold_me')));
      const res2 = await conn.readUntil('Z');
      expect(res2.map((m) => m.type).join('')).toBe('TDCZ');
      expect(seen).toEqual(['cancel', 'not aborted']);
      conn.close();
    } finally {
      await p.close();
    }
  });
});
