/**
 * The client's first packets: SSLRequest (TLS when the proxy has a certificate, else 'N'),
 * GSSENCRequest (always 'N'), CancelRequest, and the StartupMessage for protocol 3.x.
 */
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import {
  CANCEL_REQUEST_CODE,
  GSSENC_REQUEST_CODE,
  ProtocolViolation,
  SSL_REQUEST_CODE,
} from './protocol/codec.js';
import { SocketReader } from './protocol/socket-reader.js';

/** PostgreSQL's own limit on the StartupMessage length. */
const MAX_STARTUP_PACKET = 10_000;

export type ClientHello =
  | {
      kind: 'startup';
      sock: Duplex;
      reader: SocketReader;
      tls: boolean;
      /** requested protocol version: (major << 16) | minor */
      version: number;
      params: Map<string, string>;
    }
  | { kind: 'cancel'; pid: number; secret: Buffer };

export async function readClientHello(
  raw: net.Socket,
  secureContext: tls.SecureContext | undefined,
  timeoutMs: number,
): Promise<ClientHello> {
  let sock: Duplex = raw;
  let reader = new SocketReader(raw, 'client');
  let usingTls = false;
  let askedGss = false;
  for (let round = 0; round < 4; round++) {
    const pkt = await reader.startupPacket(MAX_STARTUP_PACKET, timeoutMs);
    if (pkt.length < 4) throw new ProtocolViolation('invalid startup packet');
    const code = pkt.readInt32BE(0);
    if (code === SSL_REQUEST_CODE || code === GSSENC_REQUEST_CODE) {
      // Bytes sent before the answer would be read as if they came through TLS (CVE-2021-23214).
      if (reader.buffered > 0) throw new ProtocolViolation('received unencrypted data after SSL request');
      if (code === GSSENC_REQUEST_CODE) {
        if (askedGss || usingTls) throw new ProtocolViolation('duplicate GSSENC request');
        askedGss = true;
        sock.write('N');
        continue;
      }
      if (usingTls) throw new ProtocolViolation('duplicate SSL request');
      if (!secureContext) {
        sock.write('N');
        continue;
      }
      sock.write('S');
      reader.detach();
      const t = new tls.TLSSocket(raw, { isServer: true, secureContext });
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('TLS handshake with client timed out')), timeoutMs);
        t.once('secure', () => {
          clearTimeout(timer);
          t.off('error', onErr);
          resolve();
        });
        const onErr = (err: Error) => {
          clearTimeout(timer);
          reject(new Error(`TLS handshake with client failed: ${err.message}`));
        };
        t.once('error', onErr);
      });
      sock = t;
      reader = new SocketReader(t, 'client');
      usingTls = true;
      continue;
    }
    if (code === CANCEL_REQUEST_CODE) {
      if (pkt.length < 12 || pkt.length > 8 + 256) throw new ProtocolViolation('invalid cancel request');
      return { kind: 'cancel', pid: pkt.readInt32BE(4), secret: Buffer.from(pkt.subarray(8)) };
    }
    const major = code >>> 16;
    if (major !== 3) {
      throw new ProtocolViolation(
        `unsupported frontend protocol ${major}.${code & 0xffff}: server supports 3.0 to 3.2`,
        '0A000',
      );
    }
    return {
      kind: 'startup',
      sock,
      reader,
      tls: usingTls,
      version: code,
      params: parseStartupParams(pkt.subarray(4)),
    };
  }
  throw new ProtocolViolation('too many negotiation packets');
}

function parseStartupParams(payload: Buffer): Map<string, string> {
  const params = new Map<string, string>();
  let pos = 0;
  for (;;) {
    const kEnd = payload.indexOf(0, pos);
    if (kEnd < 0)
      throw new ProtocolViolation('invalid startup packet layout: expected terminator as last byte');
    if (kEnd === pos) {
      if (kEnd !== payload.length - 1)
        throw new ProtocolViolation('invalid startup packet layout: trailing bytes');
      return params;
    }
    const vEnd = payload.indexOf(0, kEnd + 1);
    if (vEnd < 0)
      throw new ProtocolViolation('invalid startup packet layout: expected terminator as last byte');
    params.set(payload.toString('utf8', pos, kEnd), payload.toString('utf8', kEnd + 1, vEnd));
    pos = vEnd + 1;
  }
}
