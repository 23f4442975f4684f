/**
 * Connections to the upstream PostgreSQL server, with TLS negotiated per libpq's sslmode:
 *   disable      plain TCP
 *   prefer       TLS when the server offers it, not verified; plain otherwise
 *   require      TLS or fail, not verified (with a CA file: verified like verify-ca, as libpq does)
 *   verify-ca    TLS, chain verified against the CA (or the system roots)
 *   verify-full  TLS, chain and host name verified
 */
import net from 'node:net';
import tls from 'node:tls';
import type { SslMode } from '../api/types.js';
import { SSL_REQUEST_CODE, startupPacket } from './protocol/codec.js';

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

export type UpstreamSocket = net.Socket | tls.TLSSocket;

function tcpConnect(target: UpstreamTarget): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: target.host, port: target.port });
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new UpstreamError(`connecting to ${target.host}:${target.port} timed out`));
    }, target.connectTimeoutMs ?? 10_000);
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

/** Reads the one-byte answer to SSLRequest; any further byte before the handshake is an attack (CVE-2021-23222). */
function sslAnswer(sock: net.Socket, timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const done = (err: Error | null, v?: number) => {
      clearTimeout(timer);
      sock.off('data', onData);
      sock.off('error', onErr);
      sock.off('close', onClose);
      sock.pause();
      if (err) reject(err);
      else resolve(v!);
    };
    const onData = (chunk: Buffer) => {
      if (chunk.length !== 1) done(new UpstreamError('upstream sent unexpected data after its SSL response'));
      else done(null, chunk[0]!);
    };
    const onErr = (err: Error) => done(new UpstreamError(`upstream: ${err.message}`));
    const onClose = () => done(new UpstreamError('upstream closed the connection during SSL negotiation'));
    const timer = setTimeout(
      () => done(new UpstreamError('upstream did not answer the SSL request')),
      timeoutMs,
    );
    sock.on('data', onData);
    sock.once('error', onErr);
    sock.once('close', onClose);
  });
}

function tlsOptions(target: UpstreamTarget, mode: SslMode): tls.ConnectionOptions {
  const verify = mode === 'verify-ca' || mode === 'verify-full' || (mode === 'require' && !!target.caPem);
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
      reject(new UpstreamError('TLS handshake with upstream timed out'));
    }, target.connectTimeoutMs ?? 10_000);
    t.once('secureConnect', () => {
      clearTimeout(timer);
      t.removeAllListeners('error');
      resolve(t);
    });
    t.once('error', (err) => {
      clearTimeout(timer);
      t.destroy();
      reject(new UpstreamError(`TLS to upstream failed (sslmode=${mode}): ${err.message}`));
    });
  });
}

/** Opens a connection to the upstream server, TLS per sslmode. The socket is returned paused. */
export async function connectUpstream(target: UpstreamTarget): Promise<UpstreamSocket> {
  const mode = target.sslmode ?? 'prefer';
  const sock = await tcpConnect(target);
  if (mode === 'disable') return sock;
  try {
    sock.write(startupPacket(SSL_REQUEST_CODE));
    const answer = await sslAnswer(sock, target.connectTimeoutMs ?? 10_000);
    if (answer === 0x53 /* S */) return await tlsUpgrade(sock, target, mode);
    if (answer !== 0x4e /* N */ && answer !== 0x45 /* E: pre-7.0 style error */) {
      throw new UpstreamError(`upstream answered the SSL request with an invalid byte ${answer}`);
    }
    if (mode !== 'prefer') throw new UpstreamError(`upstream does not support TLS (sslmode=${mode})`);
    if (answer === 0x45) {
      // The server closed after an error packet: reconnect without asking for TLS.
      sock.destroy();
      return await tcpConnect(target);
    }
    return sock;
  } catch (err) {
    sock.destroy();
    throw err;
  }
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
  const modes = ['disable', 'prefer', 'require', 'verify-ca', 'verify-full'];
  if (sslmode !== undefined && !modes.includes(sslmode)) {
    throw new UpstreamError(`invalid sslmode '${sslmode}' in upstream URL (one of ${modes.join(', ')})`);
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
