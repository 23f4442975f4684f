/**
 * Splits a byte stream of typed protocol messages (type byte, int32 length, body) into frames,
 * without copying where it can: a message that lies within one received chunk is a slice of that
 * chunk. Messages of "streamed" types (DataRow, CopyData ...) are never assembled: they are handed
 * on as fragments as their bytes arrive, so a 500 MB row never sits in the proxy's memory. Messages
 * over a per-type limit (`skipOver`) are read and dropped as they arrive: the session refuses them
 * without ever holding them (a 20 MB statement costs the proxy its first kilobyte).
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
  | { kind: 'part'; type: number; bytes: Buffer; first: boolean; last: boolean }
  /** a message over its type's skipOver limit, consumed and dropped; `prefix` is its body's first bytes */
  | SkippedFrame;

export interface SkippedFrame {
  kind: 'skipped';
  type: number;
  /** the message's length field (body + 4) */
  length: number;
  /** the first SKIPPED_PREFIX bytes of the body (a statement name lies there), copied */
  prefix: Buffer;
}

/** Bytes of a skipped message's body kept: enough for a statement or portal name (NAMEDATALEN 64). */
export const SKIPPED_PREFIX = 1024;

export interface FramerOptions {
  /** types whose messages are passed on as fragments instead of assembled */
  streamed(type: number): boolean;
  /** largest body length accepted (the length field minus its own 4 bytes) */
  maxBodyLength: number;
  /**
   * When given: the largest body length kept for a message of `type` (undefined: no such limit). A
   * longer message is consumed without being kept and reported as a `skipped` frame once it ended.
   */
  skipOver?(type: number): number | undefined;
  /** when given, a type outside it is a protocol violation */
  validType?(type: number): boolean;
  /** used in error messages: 'frontend' or 'backend' */
  side: string;
}

export class Framer {
  private readonly header = Buffer.alloc(5);
  private headerLen = 0;
  /** the message being received across chunks */
  private cur: {
    type: number;
    remaining: number;
    streamed: boolean;
    parts: Buffer[];
    /** a message being dropped: its length field and first body bytes */
    skip?: { length: number; prefix: Buffer[]; kept: number };
  } | null = null;

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
        if (cur.skip) {
          keepPrefix(cur.skip, piece);
          if (last) {
            out.push(skippedFrame(cur.type, cur.skip));
            this.cur = null;
          }
          continue;
        }
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
        if (this.skips(type, bodyLen)) {
          const skip = { length: bodyLen + 4, prefix: [] as Buffer[], kept: 0 };
          const take = Math.min(bodyLen, n - pos - 5);
          keepPrefix(skip, chunk.subarray(pos + 5, pos + 5 + take));
          pos += 5 + take;
          if (take === bodyLen) out.push(skippedFrame(type, skip));
          else this.cur = { type, remaining: bodyLen - take, streamed: false, parts: [], skip };
          continue;
        }
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
      if (this.skips(type, bodyLen)) {
        this.cur = {
          type,
          remaining: bodyLen,
          streamed: false,
          parts: [],
          skip: { length: bodyLen + 4, prefix: [], kept: 0 },
        };
        continue;
      }
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

  private skips(type: number, bodyLen: number): boolean {
    const max = this.opts.skipOver?.(type);
    return max !== undefined && bodyLen > max;
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

function keepPrefix(skip: { prefix: Buffer[]; kept: number }, piece: Buffer): void {
  if (skip.kept >= SKIPPED_PREFIX || piece.length === 0) return;
  // copied: a view would keep the whole received chunk alive
  const part = Buffer.from(piece.subarray(0, SKIPPED_PREFIX - skip.kept));
  skip.prefix.push(part);
  skip.kept += part.length;
}

function skippedFrame(type: number, skip: { length: number; prefix: Buffer[] }): SkippedFrame {
  return { kind: 'skipped', type, length: skip.length, prefix: Buffer.concat(skip.prefix) };
}
