/**
 * Splits a byte stream of typed protocol messages (type byte, int32 length, body) into frames,
 * without copying where it can: a message that lies within one received chunk is a slice of that
 * chunk. Messages of "streamed" types (DataRow, CopyData ...) are never assembled: they are handed
 * on as fragments as their bytes arrive, so a 500 MB row never sits in the proxy's memory.
 */
import { ProtocolViolation, typeName } from './codec.js';

/** A whole message; `raw` is the message with its 5-byte header. */
export class MessageFrame {
  readonly kind = 'msg' as const;
  constructor(
    readonly type: number,
    readonly raw: Buffer,
  ) {}
  /** The part after the header: a view made on demand, since most messages pass through without one. */
  get body(): Buffer {
    return this.raw.subarray(5);
  }
}

export type Frame =
  | MessageFrame
  /** a fragment of a streamed message; `first` fragments start at the type byte */
  | { kind: 'part'; type: number; bytes: Buffer; first: boolean; last: boolean };

export interface FramerOptions {
  /** types whose messages are passed on as fragments instead of assembled */
  streamed(type: number): boolean;
  /** largest body length accepted (the length field minus its own 4 bytes) */
  maxBodyLength: number;
  /** when given, a type outside it is a protocol violation */
  validType?(type: number): boolean;
  /** used in error messages: 'frontend' or 'backend' */
  side: string;
}

export class Framer {
  private readonly header = Buffer.alloc(5);
  private headerLen = 0;
  /** the message being received across chunks */
  private cur: { type: number; remaining: number; streamed: boolean; parts: Buffer[] } | null = null;

  constructor(private readonly opts: FramerOptions) {}

  /** True when no message is partly received. */
  get atBoundary(): boolean {
    return this.headerLen === 0 && this.cur === null;
  }

  /** Appends the frames completed by `chunk` to `out`. Throws ProtocolViolation on bad framing. */
  push(chunk: Buffer, out: Frame[]): void {
    let pos = 0;
    const n = chunk.length;
    while (pos < n) {
      const cur = this.cur;
      if (cur) {
        const take = Math.min(cur.remaining, n - pos);
        const piece = chunk.subarray(pos, pos + take);
        pos += take;
        cur.remaining -= take;
        const last = cur.remaining === 0;
        if (cur.streamed) {
          out.push({ kind: 'part', type: cur.type, bytes: piece, first: false, last });
        } else {
          cur.parts.push(piece);
        }
        if (last) {
          if (!cur.streamed) {
            const raw = Buffer.concat(cur.parts);
            out.push(new MessageFrame(cur.type, raw));
          }
          this.cur = null;
        }
        continue;
      }
      // Fast path: the whole header is in this chunk.
      if (this.headerLen === 0 && n - pos >= 5) {
        const type = chunk[pos]!;
        const bodyLen = this.checkHeader(type, chunk.readInt32BE(pos + 1));
        if (n - pos >= 5 + bodyLen) {
          const raw = chunk.subarray(pos, pos + 5 + bodyLen);
          pos += 5 + bodyLen;
          out.push(new MessageFrame(type, raw));
          continue;
        }
        const streamed = this.opts.streamed(type);
        const have = chunk.subarray(pos);
        this.cur = { type, remaining: bodyLen - (n - pos - 5), streamed, parts: [] };
        if (streamed) out.push({ kind: 'part', type, bytes: have, first: true, last: false });
        else this.cur.parts.push(have);
        pos = n;
        continue;
      }
      // Slow path: the header is split across chunks.
      const take = Math.min(5 - this.headerLen, n - pos);
      chunk.copy(this.header, this.headerLen, pos, pos + take);
      this.headerLen += take;
      pos += take;
      if (this.headerLen < 5) break;
      this.headerLen = 0;
      const type = this.header[0]!;
      const bodyLen = this.checkHeader(type, this.header.readInt32BE(1));
      const head = Buffer.from(this.header);
      const streamed = this.opts.streamed(type) && bodyLen > 0;
      if (bodyLen === 0) {
        out.push(new MessageFrame(type, head));
        continue;
      }
      this.cur = { type, remaining: bodyLen, streamed, parts: [] };
      if (streamed) out.push({ kind: 'part', type, bytes: head, first: true, last: false });
      else this.cur.parts.push(head);
    }
  }

  private checkHeader(type: number, length: number): number {
    if (this.opts.validType && !this.opts.validType(type)) {
      throw new ProtocolViolation(`invalid ${this.opts.side} message type ${typeName(type)}`);
    }
    if (length < 4) throw new ProtocolViolation(`invalid ${this.opts.side} message length ${length}`);
    const bodyLen = length - 4;
    if (bodyLen > this.opts.maxBodyLength) {
      throw new ProtocolViolation(
        `${this.opts.side} message of type ${typeName(type)} too large (${length} bytes, limit ${this.opts.maxBodyLength + 4})`,
        '08P01',
      );
    }
    return bodyLen;
  }
}
