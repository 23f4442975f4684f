/**
 * Logs in upstream with credentials the proxy holds (credentials mode), answering cleartext, MD5
 * and SCRAM-SHA-256 challenges itself. The client never sees the challenges: it is told
 * AuthenticationOk by the proxy.
 */
import type { Duplex } from 'node:stream';
import { AUTH, BodyReader, cstr, encodePassword, encodeSaslInitial, T } from '../protocol/codec.js';
import type { SocketReader } from '../protocol/socket-reader.js';
import { md5Password, ScramClient, ScramError } from './scram-client.js';

export interface Credentials {
  username: string;
  password: string;
}

export type LoginResult =
  /** `relay`: messages to pass to the client before AuthenticationOk (NegotiateProtocolVersion) */
  | { ok: true; relay: Buffer[] }
  /** the server's ErrorResponse (raw), or a local failure description */
  | { ok: false; errorRaw?: Buffer; reason: string };

export async function loginUpstream(
  reader: SocketReader,
  sock: Duplex,
  creds: Credentials,
  timeoutMs: number,
): Promise<LoginResult> {
  const relay: Buffer[] = [];
  let scram: ScramClient | null = null;
  for (let step = 0; step < 16; step++) {
    const m = await reader.message(64 * 1024, timeoutMs);
    if (m.type === T.ErrorResponse)
      return { ok: false, errorRaw: m.raw, reason: 'upstream refused the login' };
    if (m.type === T.NegotiateProtocolVersion) {
      relay.push(m.raw);
      continue;
    }
    if (m.type !== T.Auth)
      return { ok: false, reason: `unexpected upstream message during login (${m.type})` };
    const r = new BodyReader(m.body, 'Authentication');
    const code = r.int32();
    const data = r.rest();
    try {
      switch (code) {
        case AUTH.ok:
          return { ok: true, relay };
        case AUTH.cleartext:
          sock.write(encodePassword(cstr(creds.password)));
          break;
        case AUTH.md5:
          sock.write(encodePassword(cstr(md5Password(creds.username, creds.password, data.subarray(0, 4)))));
          break;
        case AUTH.sasl: {
          const mechs = data.toString('utf8').split('\0');
          if (!mechs.includes('SCRAM-SHA-256')) {
            return {
              ok: false,
              reason: `upstream offers no supported SASL mechanism (${mechs.filter(Boolean).join(', ')})`,
            };
          }
          scram = new ScramClient(creds.password);
          sock.write(encodeSaslInitial('SCRAM-SHA-256', scram.first()));
          break;
        }
        case AUTH.saslContinue:
          if (!scram) return { ok: false, reason: 'SASLContinue without SASL' };
          sock.write(encodePassword(scram.final(data)));
          break;
        case AUTH.saslFinal:
          if (!scram) return { ok: false, reason: 'SASLFinal without SASL' };
          scram.verify(data);
          break;
        default:
          return {
            ok: false,
            reason: `upstream asks for an unsupported authentication method (code ${code})`,
          };
      }
    } catch (err) {
      if (err instanceof ScramError) return { ok: false, reason: err.message };
      throw err;
    }
  }
  return { ok: false, reason: 'too many authentication round trips' };
}
