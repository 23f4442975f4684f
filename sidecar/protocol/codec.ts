/**
 * Decoding and encoding of the few PostgreSQL wire-protocol messages the proxy has to look into
 * (protocol 3.0 and 3.2). Everything else passes through as bytes. Decoders validate what they read:
 * a field running past the end of the message, a missing terminator or trailing bytes is a
 * `ProtocolViolation` (SQLSTATE 08P01), which closes that one connection.
 */

export class ProtocolViolation extends Error {
  constructor(
    message: string,
    readonly sqlstate = '08P01',
  ) {
    super(message);
    this.name = 'ProtocolViolation';
  }
}

/** Protocol codes in the first packets (no type byte). */
export const SSL_REQUEST_CODE = 80877103;
export const GSSENC_REQUEST_CODE = 80877104;
export const CANCEL_REQUEST_CODE = 80877102;
export const PROTOCOL_3_0 = 3 << 16;
export const PROTOCOL_3_2 = (3 << 16) | 2;

/** Authentication request codes ('R'). */
export const AUTH = {
  ok: 0,
  cleartext: 3,
  md5: 5,
  gss: 7,
  gssContinue: 8,
  sspi: 9,
  sasl: 10,
  saslContinue: 11,
  saslFinal: 12,
} as const;

/** Message type bytes as char codes, for switch statements without string conversion. */
export const T = {
  // frontend
  Query: 0x51, // Q
  Parse: 0x50, // P
  Bind: 0x42, // B
  Describe: 0x44, // D (frontend); DataRow is also D on the backend side
  Execute: 0x45, // E (frontend); ErrorResponse is also E on the backend side
  Close: 0x43, // C (frontend); CommandComplete is also C on the backend side
  Sync: 0x53, // S (frontend); ParameterStatus is also S on the backend side
  Flush: 0x48, // H (frontend); CopyOutResponse is also H on the backend side
  FunctionCall: 0x46, // F
  CopyData: 0x64, // d
  CopyDone: 0x63, // c
  CopyFail: 0x66, // f
  Terminate: 0x58, // X
  Password: 0x70, // p (PasswordMessage, SASLInitialResponse, SASLResponse, GSSResponse)
  // backend
  Auth: 0x52, // R
  BackendKeyData: 0x4b, // K
  BindComplete: 0x32, // 2
  CloseComplete: 0x33, // 3
  CommandComplete: 0x43, // C
  CopyInResponse: 0x47, // G
  CopyOutResponse: 0x48, // H
  CopyBothResponse: 0x57, // W
  DataRow: 0x44, // D
  EmptyQueryResponse: 0x49, // I
  ErrorResponse: 0x45, // E
  FunctionCallResponse: 0x56, // V
  NegotiateProtocolVersion: 0x76, // v
  NoData: 0x6e, // n
  NoticeResponse: 0x4e, // N
  NotificationResponse: 0x41, // A
  ParameterDescription: 0x74, // t
  ParameterStatus: 0x53, // S
  ParseComplete: 0x31, // 1
  PortalSuspended: 0x73, // s
  ReadyForQuery: 0x5a, // Z
  RowDescription: 0x54, // T
} as const;

/** Frontend message types valid after authentication (PostgreSQL's SocketBackend accepts these). */
export const FRONTEND_TYPES = new Set<number>([
  T.Query,
  T.Parse,
  T.Bind,
  T.Describe,
  T.Execute,
  T.Close,
  T.Sync,
  T.Flush,
  T.FunctionCall,
  T.CopyData,
  T.CopyDone,
  T.CopyFail,
  T.Terminate,
]);

export function typeName(t: number): string {
  return t >= 0x20 && t < 0x7f ? String.fromCharCode(t) : `0x${t.toString(16).padStart(2, '0')}`;
}

/** Sequential reader over one message body; every overrun is a ProtocolViolation. */
export class BodyReader {
  pos: number;
  constructor(
    readonly buf: Buffer,
    readonly what: string,
    start = 0,
  ) {
    this.pos = start;
  }
  private need(n: number): void {
    if (n < 0 || this.pos + n > this.buf.length)
      throw new ProtocolViolation(`${this.what}: message truncated`);
  }
  byte(): number {
    this.need(1);
    return this.buf[this.pos++]!;
  }
  int16(): number {
    this.need(2);
    const v = this.buf.readInt16BE(this.pos);
    this.pos += 2;
    return v;
  }
  int32(): number {
    this.need(4);
    const v = this.buf.readInt32BE(this.pos);
    this.pos += 4;
    return v;
  }
  bytes(n: number): Buffer {
    this.need(n);
    const v = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return v;
  }
  /** where the NUL-terminated string at the read position ends; moves past its NUL */
  private cstringEnd(): number {
    const end = this.buf.indexOf(0, this.pos);
    if (end < 0) throw new ProtocolViolation(`${this.what}: unterminated string`);
    this.pos = end + 1;
    return end;
  }
  /** a NUL-terminated string's bytes (without the NUL) */
  cstring(): Buffer {
    const start = this.pos;
    return this.buf.subarray(start, this.cstringEnd());
  }
  /** skip n bytes without making a view of them (per-message decoders on the hot path) */
  skip(n: number): void {
    this.need(n);
    this.pos += n;
  }
  /** a NUL-terminated name as latin1 (see nameOf), without an intermediate view */
  name(): string {
    const start = this.pos;
    const end = this.cstringEnd();
    return end === start ? '' : this.buf.toString('latin1', start, end);
  }
  rest(): Buffer {
    const v = this.buf.subarray(this.pos);
    this.pos = this.buf.length;
    return v;
  }
  remaining(): number {
    return this.buf.length - this.pos;
  }
  end(): void {
    if (this.pos !== this.buf.length) throw new ProtocolViolation(`${this.what}: unexpected trailing bytes`);
  }
}

/**
 * Names (statements, portals, parameters) are kept as latin1 strings: a lossless byte-to-string
 * mapping, so a name round-trips to exactly the bytes the client sent whatever its encoding.
 */
export const nameOf = (b: Buffer): string => b.toString('latin1');

// ---------------------------------------------------------------- frontend decoders

export function decodeQuery(body: Buffer): { sql: Buffer } {
  const r = new BodyReader(body, 'Query');
  const sql = r.cstring();
  r.end();
  return { sql };
}

export interface ParseMsg {
  name: string;
  nameBytes: Buffer;
  sql: Buffer;
  paramTypeCount: number;
  /** raw int32 OIDs of the parameter types */
  paramTypes: Buffer;
}

export function decodeParse(body: Buffer): ParseMsg {
  const r = new BodyReader(body, 'Parse');
  const nameBytes = r.cstring();
  const sql = r.cstring();
  const n = r.int16();
  if (n < 0) throw new ProtocolViolation('Parse: negative parameter count');
  const paramTypes = r.bytes(n * 4);
  r.end();
  return { name: nameOf(nameBytes), nameBytes, sql, paramTypeCount: n, paramTypes };
}

export function decodeBind(body: Buffer): { portal: string; statement: string } {
  const r = new BodyReader(body, 'Bind');
  const portal = r.name();
  const statement = r.name();
  const nFormats = r.int16();
  if (nFormats < 0) throw new ProtocolViolation('Bind: negative format count');
  r.skip(nFormats * 2);
  const nParams = r.int16();
  if (nParams < 0) throw new ProtocolViolation('Bind: negative parameter count');
  for (let i = 0; i < nParams; i++) {
    const len = r.int32();
    if (len < -1) throw new ProtocolViolation('Bind: invalid parameter length');
    if (len > 0) r.skip(len);
  }
  const nResult = r.int16();
  if (nResult < 0) throw new ProtocolViolation('Bind: negative result format count');
  r.skip(nResult * 2);
  r.end();
  return { portal, statement };
}

export function decodeTarget(body: Buffer, what: 'Describe' | 'Close'): { kind: 'S' | 'P'; name: string } {
  const r = new BodyReader(body, what);
  const k = r.byte();
  if (k !== 0x53 && k !== 0x50) throw new ProtocolViolation(`${what}: invalid target type`);
  const name = r.name();
  r.end();
  return { kind: k === 0x53 ? 'S' : 'P', name };
}

export function decodeExecute(body: Buffer): { portal: string; maxRows: number } {
  const r = new BodyReader(body, 'Execute');
  const portal = r.name();
  const maxRows = r.int32();
  r.end();
  return { portal, maxRows };
}

export function decodeFunctionCall(body: Buffer): { oid: number } {
  const r = new BodyReader(body, 'FunctionCall');
  const oid = r.int32() >>> 0;
  const nFormats = r.int16();
  if (nFormats < 0) throw new ProtocolViolation('FunctionCall: negative format count');
  r.bytes(nFormats * 2);
  const nArgs = r.int16();
  if (nArgs < 0) throw new ProtocolViolation('FunctionCall: negative argument count');
  for (let i = 0; i < nArgs; i++) {
    const len = r.int32();
    if (len < -1) throw new ProtocolViolation('FunctionCall: invalid argument length');
    if (len > 0) r.bytes(len);
  }
  r.int16();
  r.end();
  return { oid };
}

export function expectEmpty(body: Buffer, what: string): void {
  if (body.length !== 0) throw new ProtocolViolation(`${what}: unexpected trailing bytes`);
}

export function decodeCopyFail(body: Buffer): void {
  const r = new BodyReader(body, 'CopyFail');
  r.cstring();
  r.end();
}

// ---------------------------------------------------------------- backend decoders

/** ErrorResponse / NoticeResponse fields: field code (one char) → value. Order is kept. */
export function decodeFields(
  body: Buffer,
  what = 'ErrorResponse',
  encoding: BufferEncoding = 'utf8',
): Map<string, string> {
  const r = new BodyReader(body, what);
  const fields = new Map<string, string>();
  for (;;) {
    const code = r.byte();
    if (code === 0) break;
    fields.set(String.fromCharCode(code), r.cstring().toString(encoding));
  }
  return fields;
}

export function decodeCommandComplete(body: Buffer): string {
  return new BodyReader(body, 'CommandComplete').cstring().toString('utf8');
}

export function decodeParameterStatus(body: Buffer): { name: string; value: string } {
  const r = new BodyReader(body, 'ParameterStatus');
  return { name: r.cstring().toString('utf8'), value: r.cstring().toString('utf8') };
}

export function decodeBackendKeyData(body: Buffer): { pid: number; secret: Buffer } {
  const r = new BodyReader(body, 'BackendKeyData');
  const pid = r.int32();
  const secret = Buffer.from(r.rest());
  if (secret.length < 4 || secret.length > 256)
    throw new ProtocolViolation('BackendKeyData: invalid secret length');
  return { pid, secret };
}

export function decodeRowDescription(body: Buffer, encoding: BufferEncoding = 'utf8'): string[] {
  const r = new BodyReader(body, 'RowDescription');
  const n = r.int16();
  const names: string[] = [];
  for (let i = 0; i < n; i++) {
    names.push(r.cstring().toString(encoding));
    r.bytes(18);
  }
  return names;
}

export function decodeDataRowText(body: Buffer, encoding: BufferEncoding = 'utf8'): (string | null)[] {
  const r = new BodyReader(body, 'DataRow');
  const n = r.int16();
  const row: (string | null)[] = [];
  for (let i = 0; i < n; i++) {
    const len = r.int32();
    row.push(len < 0 ? null : r.bytes(len).toString(encoding));
  }
  return row;
}

/** Row count of a CommandComplete tag (`SELECT 5`, `INSERT 0 3`, `COPY 10` ...), when the tag has one. */
export function rowCountOf(tag: string): number | undefined {
  const m = /^(SELECT|INSERT \d+|UPDATE|DELETE|MERGE|COPY|FETCH|MOVE) (\d+)$/.exec(tag);
  return m ? Number(m[2]) : undefined;
}

// ---------------------------------------------------------------- encoders

/** One typed message: type byte, int32 length (including itself), body. */
export function message(type: number, ...parts: Buffer[]): Buffer {
  let len = 4;
  for (const p of parts) len += p.length;
  const out = Buffer.allocUnsafe(1 + len);
  out[0] = type;
  out.writeInt32BE(len, 1);
  let pos = 5;
  for (const p of parts) {
    p.copy(out, pos);
    pos += p.length;
  }
  return out;
}

const NUL = Buffer.from([0]);

export function cstr(s: string | Buffer, encoding: BufferEncoding = 'utf8'): Buffer {
  const b = typeof s === 'string' ? Buffer.from(s, encoding) : s;
  return Buffer.concat([b, NUL]);
}

function int16(n: number): Buffer {
  const b = Buffer.allocUnsafe(2);
  b.writeInt16BE(n);
  return b;
}

function int32(n: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeInt32BE(n | 0);
  return b;
}

export function encodeFields(
  type: number,
  fields: ReadonlyMap<string, string>,
  encoding: BufferEncoding = 'utf8',
): Buffer {
  const parts: Buffer[] = [];
  for (const [k, v] of fields) {
    if (k.length === 0) continue;
    // NUL inside a value would end the field early and desynchronise the client: strip it.
    parts.push(Buffer.from(k.slice(0, 1), 'latin1'), cstr(String(v).replace(/\0/g, ''), encoding));
  }
  parts.push(NUL);
  return message(type, ...parts);
}

export interface ErrorSpec {
  severity?: 'ERROR' | 'FATAL';
  sqlstate: string;
  message: string;
  detail?: string;
  hint?: string;
}

export function errorFields(e: ErrorSpec): Map<string, string> {
  const sev = e.severity ?? 'ERROR';
  const f = new Map<string, string>([
    ['S', sev],
    ['V', sev],
    ['C', e.sqlstate],
    ['M', e.message],
  ]);
  if (e.detail) f.set('D', e.detail);
  if (e.hint) f.set('H', e.hint);
  return f;
}

export function encodeError(e: ErrorSpec): Buffer {
  return encodeFields(T.ErrorResponse, errorFields(e));
}

export function encodeQuery(sql: Buffer): Buffer {
  return message(T.Query, sql, NUL);
}

export function encodeParse(
  nameBytes: Buffer,
  sql: Buffer,
  paramTypeCount: number,
  paramTypes: Buffer,
): Buffer {
  return message(T.Parse, nameBytes, NUL, sql, NUL, int16(paramTypeCount), paramTypes);
}

export function encodeAuth(code: number, data?: Buffer): Buffer {
  return data ? message(T.Auth, int32(code), data) : message(T.Auth, int32(code));
}

export function encodeBackendKeyData(pid: number, secret: Buffer): Buffer {
  return message(T.BackendKeyData, int32(pid), secret);
}

export function encodePassword(data: Buffer): Buffer {
  return message(T.Password, data);
}

export function encodeSaslInitial(mechanism: string, data: Buffer): Buffer {
  return message(T.Password, cstr(mechanism), int32(data.length), data);
}

export const TERMINATE = Buffer.from([T.Terminate, 0, 0, 0, 4]);

/** Untyped startup-phase packet: int32 length, int32 code, payload. */
export function startupPacket(code: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const out = Buffer.allocUnsafe(8 + payload.length);
  out.writeInt32BE(8 + payload.length, 0);
  out.writeInt32BE(code, 4);
  payload.copy(out, 8);
  return out;
}

export function encodeStartup(version: number, params: ReadonlyMap<string, string>): Buffer {
  const parts: Buffer[] = [];
  for (const [k, v] of params) parts.push(cstr(k), cstr(v));
  parts.push(NUL);
  return startupPacket(version, Buffer.concat(parts));
}

export function encodeCancel(pid: number, secret: Buffer): Buffer {
  return startupPacket(CANCEL_REQUEST_CODE, Buffer.concat([int32(pid), secret]));
}

/** AuthenticationSASL's mechanism list, without SCRAM-SHA-256-PLUS (channel binding cannot cross a proxy). */
export function filterSaslMechanisms(data: Buffer): {
  mechanisms: string[];
  encoded: Buffer;
  /** the server offered a channel-binding mechanism that the proxy withheld */
  withheldPlus: boolean;
} {
  const r = new BodyReader(data, 'AuthenticationSASL');
  const mechanisms: string[] = [];
  while (r.remaining() > 0) {
    const m = r.cstring().toString('utf8');
    if (m === '') break;
    mechanisms.push(m);
  }
  const kept = mechanisms.filter((m) => !m.endsWith('-PLUS'));
  return {
    mechanisms: kept,
    encoded: Buffer.concat([...kept.map((m) => cstr(m)), NUL]),
    withheldPlus: kept.length < mechanisms.length,
  };
}

/**
 * The gs2 channel-binding flag of a SASLInitialResponse (`n`, `y` or `p`), or undefined when the body
 * is not one. `y`: the client could bind but believes the server cannot; a server that can (it offered
 * SCRAM-SHA-256-PLUS) refuses that as a downgrade (RFC 5802 §6).
 */
export function saslInitialGs2Flag(body: Buffer): string | undefined {
  const nul = body.indexOf(0);
  if (nul < 0 || body.length < nul + 6) return undefined;
  return String.fromCharCode(body[nul + 5]!);
}
