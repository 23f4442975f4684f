/**
 * Connections to the upstream PostgreSQL server, with TLS negotiated exactly as libpq's sslmode
 * (fe-connect.c) means it:
 *   disable      plain TCP
 *   allow        plain first; if the server refuses that start-up (an ErrorResponse, e.g. a
 *                `hostnossl ... reject` line in pg_hba.conf), once more over TLS
 *   prefer       TLS when the server answers the SSLRequest with 'S', plain when it answers 'N';
 *                if the TLS handshake fails, or the server refuses the start-up over TLS, once more
 *                in plain text
 *   require      TLS or fail
 *   verify-ca    TLS, chain verified against the CA (or the system roots when none is given)
 *   verify-full  TLS, chain and host name verified
 * As in libpq, a CA (libpq's root.crt, here the policy's caSecretRef or --upstream-ca) makes every
 * TLS connection verify the chain, whatever the mode: `require` then behaves as `verify-ca`, and a
 * `prefer` whose certificate does not verify falls back to plain text as any failed handshake does.
 *
 * The second attempt of allow/prefer needs the answer to the start-up packet, which is why
 * connectUpstream takes that packet: it sends it, looks at the first byte the server answers, and
 * hands the socket back with that answer unread. Only a refusal before any authentication exchange
 * is retried (libpq retries later ones too, re-sending the password; a relayed SCRAM exchange cannot
 * be replayed).
 */
import net from 'node:net';
import tls from 'node:tls';
import { SSL_MODES, type SslMode } from '../api/types.js';
import { decodeFields, SSL_REQUEST_CODE, startupPacket } from './protocol/codec.js';

export interface UpstreamTarget {
  host: string;
  port: number;
  sslmode?: SslMode;
  /** PEM of the CA that signed the server's certificate */
  caPem?: string | Buffer;
  connectTimeoutMs?: number;
}

export class UpstreamError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UpstreamError';
  }
}

/** The TLS handshake itself failed (prefer then tries plain text, as libpq does). */
class TlsHandshakeError extends UpstreamError {}

export type UpstreamSocket = net.Socket | tls.TLSSocket;

const ERROR_RESPONSE = 0x45; // 'E'
const timeoutOf = (target: UpstreamTarget) => target.connectTimeoutMs ?? 10_000;

function tcpConnect(target: UpstreamTarget): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: target.host, port: target.port });
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new UpstreamError(`connecting to ${target.host}:${target.port} timed out`));
    }, timeoutOf(target));
    sock.once('connect', () => {
      clearTimeout(timer);
      sock.removeAllListeners('error');
      sock.setNoDelay(true);
      sock.setKeepAlive(true, 60_000);
      resolve(sock);
    });
    sock.once('error', (err) => {
      clearTimeout(timer);
      reject(new UpstreamError(`cannot connect to ${target.host}:${target.port}: ${err.message}`));
    });
  });
}

/**
 * The first chunk the server sends, read with a one-off listener; the socket is left paused with
 * nothing consumed but that chunk, which the caller either keeps or puts back with unshift().
 */
function firstChunk(sock: net.Socket, timeoutMs: number, waitingFor: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const done = (err: Error | null, chunk?: Buffer) => {
      clearTimeout(timer);
      sock.off('data', onData);
      sock.off('error', onErr);
      sock.off('close', onClose);
      sock.pause();
      if (err) reject(err);
      else resolve(chunk!);
    };
    const onData = (chunk: Buffer) => done(null, chunk);
    const onErr = (err: Error) => done(new UpstreamError(`upstream: ${err.message}`));
    const onClose = () => done(new UpstreamError(`upstream closed the connection before ${waitingFor}`));
    const timer = setTimeout(
      () => done(new UpstreamError(`upstream did not answer ${waitingFor}`)),
      timeoutMs,
    );
    sock.on('data', onData);
    sock.once('error', onErr);
    sock.once('close', onClose);
    sock.resume();
  });
}

/** The M field of an ErrorResponse at the start of `chunk`, when it is whole there. */
function errorMessageIn(chunk: Buffer): string | undefined {
  if (chunk.length < 5 || chunk[0] !== ERROR_RESPONSE) return undefined;
  const len = chunk.readInt32BE(1);
  if (len < 4 || chunk.length < 1 + len) return undefined;
  try {
    return decodeFields(chunk.subarray(5, 1 + len)).get('M');
  } catch {
    return undefined;
  }
}

/** SSLRequest and its one-byte answer: true for 'S', false for 'N'. */
async function askForTls(sock: net.Socket, target: UpstreamTarget): Promise<boolean> {
  sock.write(startupPacket(SSL_REQUEST_CODE));
  const chunk = await firstChunk(sock, timeoutOf(target), 'the SSL request');
  const answer = chunk[0]!;
  if (answer === ERROR_RESPONSE) {
    // A server that cannot start a backend (fork failure) answers with an ErrorResponse; libpq
    // reports it rather than retrying.
    const m = errorMessageIn(chunk);
    throw new UpstreamError(`upstream refused the connection${m ? `: ${m}` : ''}`);
  }
  // Any byte after the answer, before the handshake, would be injected plaintext (CVE-2021-23222).
  if (chunk.length !== 1) throw new UpstreamError('upstream sent unexpected data after its SSL response');
  if (answer === 0x53 /* S */) return true;
  if (answer === 0x4e /* N */) return false;
  throw new UpstreamError(`upstream answered the SSL request with an invalid byte ${answer}`);
}

function tlsOptions(target: UpstreamTarget, mode: SslMode): tls.ConnectionOptions {
  // libpq: a root certificate makes every mode verify the chain; verify-* always do.
  const verify = mode === 'verify-ca' || mode === 'verify-full' || !!target.caPem;
  const opts: tls.ConnectionOptions = { rejectUnauthorized: verify };
  if (target.caPem) opts.ca = target.caPem;
  if (!net.isIP(target.host)) opts.servername = target.host;
  if (mode === 'verify-full') {
    opts.checkServerIdentity = (_host, cert) => tls.checkServerIdentity(target.host, cert);
  } else {
    opts.checkServerIdentity = () => undefined;
  }
  return opts;
}

function tlsUpgrade(sock: net.Socket, target: UpstreamTarget, mode: SslMode): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const t = tls.connect({ socket: sock, ...tlsOptions(target, mode) });
    const timer = setTimeout(() => {
      t.destroy();
      reject(new TlsHandshakeError('TLS handshake with upstream timed out'));
    }, timeoutOf(target));
    t.once('secureConnect', () => {
      clearTimeout(timer);
      t.removeAllListeners('error');
      // Returned like a plain socket: paused until a reader attaches and resumes it.
      t.pause();
      resolve(t);
    });
    t.once('error', (err) => {
      clearTimeout(timer);
      t.destroy();
      reject(new TlsHandshakeError(`TLS to upstream failed (sslmode=${mode}): ${err.message}`));
    });
  });
}

/** One connection, TLS or not as asked; plain and TLS refused as each mode requires. */
async function open(target: UpstreamTarget, mode: SslMode, wantTls: boolean): Promise<UpstreamSocket> {
  const sock = await tcpConnect(target);
  if (!wantTls) {
    sock.pause();
    return sock;
  }
  try {
    if (await askForTls(sock, target)) return await tlsUpgrade(sock, target, mode);
    if (mode === 'require' || mode === 'verify-ca' || mode === 'verify-full') {
      throw new UpstreamError(`upstream does not support TLS (sslmode=${mode})`);
    }
    return sock; // 'N' under allow/prefer: go on in plain text on this same connection
  } catch (err) {
    sock.destroy();
    throw err;
  }
}

/**
 * Sends the start-up packet and peeks at the answer: true when the server refused it at once
 * (ErrorResponse). The answer stays unread for the caller.
 */
async function refusedAtStartup(
  sock: UpstreamSocket,
  startup: Buffer,
  target: UpstreamTarget,
): Promise<boolean> {
  sock.write(startup);
  const chunk = await firstChunk(sock, timeoutOf(target), 'the start-up packet');
  sock.unshift(chunk);
  return chunk[0] === ERROR_RESPONSE;
}

const isTls = (s: UpstreamSocket): boolean => s instanceof tls.TLSSocket;

/**
 * Opens a connection to the upstream server, TLS per sslmode. With `startup`, that packet is sent
 * (so allow and prefer can try the other way when it is refused, as libpq does); the socket is then
 * returned paused with the server's answer unread. A SocketReader resumes it.
 */
export async function connectUpstream(target: UpstreamTarget, startup?: Buffer): Promise<UpstreamSocket> {
  const mode = target.sslmode ?? 'prefer';
  let first: UpstreamSocket;
  try {
    first = await open(target, mode, mode !== 'disable' && mode !== 'allow');
  } catch (err) {
    // prefer: a TLS handshake that fails (not a refusal to talk at all) is retried in plain text.
    if (mode !== 'prefer' || !(err instanceof TlsHandshakeError)) throw err;
    first = await open(target, mode, false);
  }
  if (!startup) return first;
  const retry = (mode === 'allow' && !isTls(first)) || (mode === 'prefer' && isTls(first));
  if (!retry) {
    first.write(startup);
    return first;
  }
  try {
    if (!(await refusedAtStartup(first, startup, target))) return first;
  } catch (err) {
    first.destroy();
    throw err;
  }
  first.destroy();
  const second = await open(target, mode, mode === 'allow');
  try {
    await refusedAtStartup(second, startup, target);
  } catch (err) {
    second.destroy();
    throw err;
  }
  return second;
}

/** Parses `postgres://user:pass@host:port/db?sslmode=...` into a target plus optional parts. */
export function parseUpstreamUrl(url: string): {
  target: UpstreamTarget;
  database?: string;
  credentials?: { username: string; password: string };
} {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new UpstreamError(`invalid upstream URL '${url.replace(/:[^@/]*@/, ':***@')}'`);
  }
  if (u.protocol !== 'postgres:' && u.protocol !== 'postgresql:') {
    throw new UpstreamError(`upstream URL must start with postgres:// (got ${u.protocol})`);
  }
  if (!u.hostname) throw new UpstreamError('upstream URL has no host');
  const sslmode = u.searchParams.get('sslmode') ?? undefined;
  if (sslmode !== undefined && !(SSL_MODES as readonly string[]).includes(sslmode)) {
    throw new UpstreamError(`invalid sslmode '${sslmode}' in upstream URL (one of ${SSL_MODES.join(', ')})`);
  }
  const host = u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname;
  const target: UpstreamTarget = { host, port: u.port ? Number(u.port) : 5432 };
  if (sslmode) target.sslmode = sslmode as SslMode;
  const database = decodeURIComponent(u.pathname.replace(/^\//, '')) || undefined;
  const out: ReturnType<typeof parseUpstreamUrl> = { target };
  if (database) out.database = database;
  if (u.username && u.password) {
    out.credentials = { username: decodeURIComponent(u.username), password: decodeURIComponent(u.password) };
  }
  return out;
}
