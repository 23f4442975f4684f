/**
 * The framer and the write buffer, property-tested: any message sequence cut into any chunks
 * yields the same messages, fragments of streamed types add up to the original bytes, and
 * unchanged pass-through goes out as the received buffer itself.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ProtocolViolation } from '../../sidecar/protocol/codec.js';
import { type Frame, Framer } from '../../sidecar/protocol/framer.js';
import { OutBuffer } from '../../sidecar/protocol/out-buffer.js';

const message = (type: number, body: Uint8Array) => {
  const out = Buffer.alloc(5 + body.length);
  out[0] = type;
  out.writeInt32BE(4 + body.length, 1);
  Buffer.from(body).copy(out, 5);
  return out;
};

const STREAMED = 0x64; // 'd'
const arbMessage = fc.record({
  type: fc.constantFrom(0x51, 0x50, STREAMED, 0x53),
  body: fc.uint8Array({ maxLength: 300 }),
});

describe('Framer', () => {
  it('reassembles any message sequence split at any points', () => {
    fc.assert(
      fc.property(
        fc.array(arbMessage, { maxLength: 20 }),
        fc.array(fc.nat(), { maxLength: 30 }),
        (msgs, cuts) => {
          const stream = Buffer.concat(msgs.map((m) => message(m.type, m.body)));
          const points = [...new Set(cuts.map((c) => (stream.length ? c % stream.length : 0)))].sort(
            (a, b) => a - b,
          );
          const chunks: Buffer[] = [];
          let prev = 0;
          for (const p of [...points, stream.length]) {
            if (p > prev) chunks.push(stream.subarray(prev, p));
            prev = Math.max(prev, p);
          }
          const framer = new Framer({
            side: 'test',
            streamed: (t) => t === STREAMED,
            maxBodyLength: 1 << 20,
          });
          const frames: Frame[] = [];
          for (const c of chunks) framer.push(c, frames);
          // Rebuild messages from frames.
          const rebuilt: Buffer[] = [];
          let parts: Buffer[] = [];
          for (const f of frames) {
            if (f.kind === 'msg') {
              expect(f.raw.subarray(5)).toEqual(f.body);
              rebuilt.push(Buffer.from(f.raw));
            } else if (f.kind === 'skipped') {
              throw new Error('no skipOver given, nothing may be skipped');
            } else {
              expect(f.type).toBe(STREAMED);
              if (f.first) parts = [];
              parts.push(Buffer.from(f.bytes));
              if (f.last) rebuilt.push(Buffer.concat(parts));
            }
          }
          expect(rebuilt).toEqual(msgs.map((m) => message(m.type, m.body)));
          expect(framer.atBoundary).toBe(true);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('skips messages over their type skipOver limit, split at any points, keeping only a prefix', () => {
    const SKIPPED = 0x51; // 'Q'
    const LIMIT = 100;
    fc.assert(
      fc.property(
        fc.array(arbMessage, { maxLength: 20 }),
        fc.array(fc.nat(), { maxLength: 30 }),
        (msgs, cuts) => {
          const stream = Buffer.concat(msgs.map((m) => message(m.type, m.body)));
          const points = [...new Set(cuts.map((c) => (stream.length ? c % stream.length : 0)))].sort(
            (a, b) => a - b,
          );
          const framer = new Framer({
            side: 'test',
            streamed: (t) => t === STREAMED,
            maxBodyLength: 1 << 20,
            skipOver: (t) => (t === SKIPPED ? LIMIT : undefined),
          });
          const frames: Frame[] = [];
          let prev = 0;
          for (const p of [...points, stream.length]) {
            if (p > prev) framer.push(stream.subarray(prev, p), frames);
            prev = Math.max(prev, p);
          }
          // one frame per message, in order (streamed ones, tested above, left out): skipped ones as
          // `skipped` with the whole body as prefix (bodies here are below SKIPPED_PREFIX)
          const seen: string[] = [];
          for (const f of frames) {
            if (f.type === STREAMED) continue;
            if (f.kind === 'msg') seen.push(`m${f.type}:${f.body.toString('hex')}`);
            else if (f.kind === 'skipped') seen.push(`s${f.type}:${f.length}:${f.prefix.toString('hex')}`);
            else throw new Error('a fragment of a type that is not streamed');
          }
          const want = msgs
            .filter((m) => m.type !== STREAMED)
            .map((m) =>
              m.type === SKIPPED && m.body.length > LIMIT
                ? `s${m.type}:${m.body.length + 4}:${Buffer.from(m.body).toString('hex')}`
                : `m${m.type}:${Buffer.from(m.body).toString('hex')}`,
            );
          expect(seen).toEqual(want);
          expect(framer.atBoundary).toBe(true);
        },
      ),
      { numRuns: 300 },
    );
    // a large one keeps only SKIPPED_PREFIX bytes
    const framer = new Framer({
      side: 'test',
      streamed: () => false,
      maxBodyLength: 1 << 30,
      skipOver: () => 10,
    });
    const frames: Frame[] = [];
    const big = message(SKIPPED, Buffer.alloc(5_000_000, 0x61));
    for (let i = 0; i < big.length; i += 65536) framer.push(big.subarray(i, i + 65536), frames);
    expect(frames).toHaveLength(1);
    expect(frames[0]).toMatchObject({ kind: 'skipped', type: SKIPPED, length: 5_000_004 });
    expect((frames[0] as { prefix: Buffer }).prefix.length).toBe(1024);
  });

  it('refuses bad lengths, oversized messages and unknown types from the header', () => {
    const framer = () =>
      new Framer({
        side: 'frontend',
        streamed: () => false,
        maxBodyLength: 100,
        validType: (t) => t === 0x51,
      });
    expect(() => framer().push(Buffer.from([0x51, 0, 0, 0, 3]), [])).toThrow(ProtocolViolation);
    expect(() => framer().push(Buffer.from([0x51, 0, 0, 1, 0]), [])).toThrow(/too large/);
    expect(() => framer().push(Buffer.from([0x5a, 0, 0, 0, 4]), [])).toThrow(/invalid frontend message type/);
    // A header split over chunks is checked too.
    const f = framer();
    f.push(Buffer.from([0x51, 0]), []);
    expect(() => f.push(Buffer.from([0x10, 0, 0]), [])).toThrow(/too large/);
  });
});

describe('OutBuffer', () => {
  it('merges adjacent slices of one received chunk back into a single slice', () => {
    const chunk = Buffer.from('abcdefghij');
    const out = new OutBuffer();
    out.push(chunk.subarray(0, 3));
    out.push(chunk.subarray(3, 7));
    out.push(chunk.subarray(7));
    const taken = out.take()!;
    expect(taken.toString()).toBe('abcdefghij');
    expect(taken.buffer).toBe(chunk.buffer);
    expect(taken.byteOffset).toBe(chunk.byteOffset);
    expect(out.take()).toBeNull();
  });

  it('concatenates when a replacement breaks the run', () => {
    const chunk = Buffer.from('abcdef');
    const out = new OutBuffer();
    out.push(chunk.subarray(0, 2));
    out.push(Buffer.from('XY'));
    out.push(chunk.subarray(4));
    expect(out.take()!.toString()).toBe('abXYef');
  });

  it('gives exactly the bytes pushed, for any mix of adjacent, gapped, repeated and foreign slices', () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ src: fc.nat(2), start: fc.nat(40), len: fc.nat(12) }), { maxLength: 30 }),
        (pushes) => {
          const chunks = [
            Buffer.from('0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJ'),
            Buffer.from('KLMNOPQRSTUVWXYZ'),
          ];
          const out = new OutBuffer();
          const expected: Buffer[] = [];
          let pos = 0;
          for (const p of pushes) {
            // src 2: a fresh buffer; otherwise a slice of a chunk, usually right after the last one.
            const b =
              p.src === 2
                ? Buffer.from('-'.repeat(p.len))
                : chunks[p.src]!.subarray(
                    Math.min(p.start % 3 === 0 ? p.start : pos, chunks[p.src]!.length),
                    Math.min((p.start % 3 === 0 ? p.start : pos) + p.len, chunks[p.src]!.length),
                  );
            pos = b.byteOffset - (chunks[p.src]?.byteOffset ?? 0) + b.length;
            out.push(b);
            expected.push(b);
          }
          const want = Buffer.concat(expected);
          expect(out.length).toBe(want.length);
          const taken = out.take();
          expect(taken ? taken.toString() : '').toBe(want.toString());
          expect(out.take()).toBeNull();
        },
      ),
    );
  });
});
