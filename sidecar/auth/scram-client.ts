/**
 * The client side of SCRAM-SHA-256 (RFC 5802/7677) as PostgreSQL speaks it, for logging in upstream
 * with proxy-held credentials. No channel binding (gs2 header `n,,`). The password is used as given
 * (no SASLprep): PostgreSQL itself falls back to the raw password when SASLprep does not apply,
 * which covers ASCII passwords exactly.
 */
import crypto from 'node:crypto';

export class ScramError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ScramError';
  }
}

const hmac = (key: Buffer, data: string | Buffer) => crypto.createHmac('sha256', key).update(data).digest();
const sha256 = (data: Buffer) => crypto.createHash('sha256').update(data).digest();

export class ScramClient {
  private readonly nonce = crypto.randomBytes(18).toString('base64');
  private readonly clientFirstBare = `n=,r=${this.nonce}`;
  private serverSignature: Buffer | null = null;

  constructor(private readonly password: string) {}

  /** SASLInitialResponse data */
  first(): Buffer {
    return Buffer.from(`n,,${this.clientFirstBare}`, 'utf8');
  }

  /** Answer to AuthenticationSASLContinue: the client-final-message. */
  final(serverFirstData: Buffer): Buffer {
    const serverFirst = serverFirstData.toString('utf8');
    const attrs = parseAttrs(serverFirst);
    const r = attrs.get('r');
    const s = attrs.get('s');
    const i = Number(attrs.get('i'));
    if (!r || !s || !Number.isInteger(i) || i < 1)
      throw new ScramError('malformed SCRAM server-first-message');
    if (!r.startsWith(this.nonce) || r.length === this.nonce.length)
      throw new ScramError('SCRAM server nonce invalid');
    const salted = crypto.pbkdf2Sync(
      Buffer.from(this.password, 'utf8'),
      Buffer.from(s, 'base64'),
      i,
      32,
      'sha256',
    );
    const clientKey = hmac(salted, 'Client Key');
    const storedKey = sha256(clientKey);
    const withoutProof = `c=biws,r=${r}`;
    const authMessage = `${this.clientFirstBare},${serverFirst},${withoutProof}`;
    const clientSignature = hmac(storedKey, authMessage);
    const proof = Buffer.alloc(32);
    for (let k = 0; k < 32; k++) proof[k] = clientKey[k]! ^ clientSignature[k]!;
    this.serverSignature = hmac(hmac(salted, 'Server Key'), authMessage);
    return Buffer.from(`${withoutProof},p=${proof.toString('base64')}`, 'utf8');
  }

  /** Checks AuthenticationSASLFinal: the server proves it knows the password too. */
  verify(serverFinalData: Buffer): void {
    const attrs = parseAttrs(serverFinalData.toString('utf8'));
    if (attrs.has('e')) throw new ScramError(`SCRAM server error: ${attrs.get('e')}`);
    const v = attrs.get('v');
    if (!v || !this.serverSignature) throw new ScramError('malformed SCRAM server-final-message');
    const got = Buffer.from(v, 'base64');
    if (got.length !== this.serverSignature.length || !crypto.timingSafeEqual(got, this.serverSignature)) {
      throw new ScramError('SCRAM server signature does not match: the upstream did not prove the password');
    }
  }
}

function parseAttrs(msg: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const part of msg.split(',')) {
    const eq = part.indexOf('=');
    if (eq === 1) m.set(part[0]!, part.slice(2));
  }
  return m;
}

/** PostgreSQL's MD5 password answer: 'md5' + md5(md5(password + user) + salt). */
export function md5Password(user: string, password: string, salt: Buffer): string {
  const inner = crypto
    .createHash('md5')
    .update(password + user, 'utf8')
    .digest('hex');
  return (
    'md5' +
    crypto
      .createHash('md5')
      .update(Buffer.concat([Buffer.from(inner, 'utf8'), salt]))
      .digest('hex')
  );
}
