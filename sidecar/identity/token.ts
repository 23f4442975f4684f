/**
 * Token authentication, the part the proxy sees: it asks the client for a cleartext password
 * (AuthenticationCleartextPassword), and when that password is a token, a TokenVerifier turns it
 * into a user and groups or refuses it with an AuthError carrying a bounded reason (an audit field
 * and a metric label). Messages never contain the token.
 */

export const AUTH_FAILURE_REASONS = [
  'expired',
  'not_yet_valid',
  'bad_audience',
  'bad_issuer',
  'bad_signature',
  'malformed',
  'review_denied',
  /** the verifier's backend (JWKS, discovery, API server) could not be reached or answered badly */
  'unavailable',
] as const;

export type AuthFailureReason = (typeof AUTH_FAILURE_REASONS)[number];

export class AuthError extends Error {
  override name = 'AuthError';
  constructor(
    readonly reason: AuthFailureReason,
    message: string,
  ) {
    super(message);
  }
}

export interface VerifiedToken {
  user: string;
  groups: string[];
  /** the verified claims (JWT) or the TokenReview user's extra fields */
  claims: Record<string, unknown>;
}

export interface TokenVerifier {
  /** resolves with who the token names, or rejects with AuthError */
  verify(token: string): Promise<VerifiedToken>;
}

const B64URL = /^[A-Za-z0-9_-]+$/;

/**
 * A compact JWS (`header.payload.signature`) whose header is a JSON object with `alg`: enough to
 * tell a token from a password without trusting anything in it.
 */
export function looksLikeJwt(s: string): boolean {
  if (typeof s !== 'string' || s.length < 10 || s.length > 16 * 1024) return false;
  const parts = s.split('.');
  if (parts.length !== 3) return false;
  const [h, p, sig] = parts as [string, string, string];
  if (!B64URL.test(h) || !B64URL.test(p) || (sig !== '' && !B64URL.test(sig))) return false;
  try {
    const header = JSON.parse(Buffer.from(h, 'base64url').toString('utf8'));
    return header !== null && typeof header === 'object' && typeof header.alg === 'string';
  } catch {
    return false;
  }
}
