/**
 * JWT verification against a JWKS: given directly (`jwksUrl`) or found through OIDC discovery
 * (`<issuer>/.well-known/openid-configuration` → `jwks_uri`). Signature, `iss`, `aud`, `exp` (which
 * must be present) and `nbf` are checked with `clockToleranceSeconds` of slack; only asymmetric
 * algorithms are accepted, so `alg: none` and HMAC-with-the-public-key tricks fail.
 *
 * Claim mapping: `userClaim` (default: `email` when `email_verified` is true, else `sub`), `groupsClaim` (default `groups`; an array of strings or one string). A claim name is
 * looked up as-is first (URL-style names contain dots), then as a dotted path (`realm_access.roles`).
 */
import {
  createRemoteJWKSet,
  customFetch,
  decodeProtectedHeader,
  type FetchImplementation,
  type JWTPayload,
  jwtVerify,
} from 'jose';
import { requestJson } from './http.js';
import { AuthError, type TokenVerifier, type VerifiedToken } from './token.js';

export const DEFAULT_ALGORITHMS = [
  'RS256',
  'RS384',
  'RS512',
  'PS256',
  'PS384',
  'PS512',
  'ES256',
  'ES384',
  'ES512',
  'EdDSA',
  'Ed25519',
];

export interface JwtAuthConfig {
  type: 'jwt';
  /** expected `iss`; also where discovery looks when `jwksUrl` is absent */
  issuer: string;
  /** accepted `aud` values: the token must name at least one */
  audiences: string[];
  jwksUrl?: string;
  userClaim?: string;
  groupsClaim?: string;
  /** default 30 */
  clockToleranceSeconds?: number;
  /** default DEFAULT_ALGORITHMS */
  algorithms?: string[];
  /** PEM of a private CA for the discovery and JWKS endpoints */
  caPem?: string;
  /** per HTTP request; default 5000 */
  timeoutMs?: number;
}

const MAX_TOKEN_LENGTH = 16 * 1024;

function unavailable(what: string, err: unknown): AuthError {
  return new AuthError('unavailable', `${what}: ${err instanceof Error ? err.message : String(err)}`);
}

/** Map jose's error codes onto our reasons. */
function joseFailure(err: unknown): AuthError {
  if (err instanceof AuthError) return err;
  const e = err as { code?: string; claim?: string; reason?: string; message?: string };
  switch (e.code) {
    case 'ERR_JWT_EXPIRED':
      return new AuthError('expired', 'token has expired');
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED':
      if (e.reason === 'missing') return new AuthError('malformed', `token has no "${e.claim}" claim`);
      if (e.claim === 'nbf') return new AuthError('not_yet_valid', 'token is not valid yet (nbf)');
      if (e.claim === 'aud') return new AuthError('bad_audience', 'token is not meant for this audience');
      if (e.claim === 'iss') return new AuthError('bad_issuer', 'token comes from an unexpected issuer');
      return new AuthError('malformed', `token claim "${e.claim}" is invalid`);
    case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED':
      return new AuthError('bad_signature', 'token signature does not verify');
    case 'ERR_JWKS_NO_MATCHING_KEY':
    case 'ERR_JWKS_MULTIPLE_MATCHING_KEYS':
      return new AuthError('bad_signature', 'no key of the issuer matches the token');
    case 'ERR_JOSE_ALG_NOT_ALLOWED':
      return new AuthError('bad_signature', 'token algorithm is not allowed');
    case 'ERR_JWS_INVALID':
    case 'ERR_JWT_INVALID':
    case 'ERR_JOSE_NOT_SUPPORTED':
      return new AuthError('malformed', 'token is not a valid signed JWT');
    case 'ERR_JWKS_TIMEOUT':
    case 'ERR_JWKS_INVALID':
    case 'ERR_JOSE_GENERIC':
      return unavailable('cannot get the issuer keys', err);
    default:
      // fetch failures and anything unforeseen: the token was not judged, so it is not accepted.
      return unavailable('token verification failed', err);
  }
}

function claim(payload: Record<string, unknown>, name: string): unknown {
  if (name in payload) return payload[name];
  let v: unknown = payload;
  for (const part of name.split('.')) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<string, unknown>)[part];
  }
  return v;
}

function userOf(payload: JWTPayload, userClaim: string | undefined): string {
  if (userClaim) {
    const v = claim(payload, userClaim);
    if (typeof v !== 'string' || v === '')
      throw new AuthError('malformed', `token has no "${userClaim}" claim`);
    return v;
  }
  // An email the issuer has not verified is only what someone typed at sign-up: it names nobody.
  // Some issuers send the flag as the string "true".
  const verified = payload.email_verified === true || payload.email_verified === 'true';
  if (typeof payload.email === 'string' && payload.email !== '' && verified) return payload.email;
  if (typeof payload.sub === 'string' && payload.sub !== '') return payload.sub;
  throw new AuthError('malformed', 'token has neither "email" nor "sub"');
}

function groupsOf(payload: JWTPayload, groupsClaim: string): string[] {
  const v = claim(payload, groupsClaim);
  if (typeof v === 'string') return v === '' ? [] : [v];
  if (Array.isArray(v)) return v.filter((g): g is string => typeof g === 'string' && g !== '');
  return [];
}

/** Route jose's key fetches through requestJson, so a private CA works and errors look alike. */
function fetcher(cfg: JwtAuthConfig): FetchImplementation {
  return async (url) => {
    const res = await requestJson({ method: 'GET', url, caPem: cfg.caPem, timeoutMs: cfg.timeoutMs });
    return new Response(JSON.stringify(res.body ?? null), {
      status: res.status,
      headers: { 'content-type': 'application/json' },
    });
  };
}

async function discoverJwksUri(cfg: JwtAuthConfig): Promise<string> {
  const url = `${cfg.issuer.replace(/\/+$/, '')}/.well-known/openid-configuration`;
  let res: Awaited<ReturnType<typeof requestJson>>;
  try {
    res = await requestJson({ method: 'GET', url, caPem: cfg.caPem, timeoutMs: cfg.timeoutMs });
  } catch (err) {
    throw unavailable(`OIDC discovery at ${url}`, err);
  }
  const doc = res.body as { issuer?: unknown; jwks_uri?: unknown } | undefined;
  if (res.status !== 200 || !doc || typeof doc !== 'object') {
    throw new AuthError('unavailable', `OIDC discovery at ${url}: HTTP ${res.status}`);
  }
  // OpenID Connect Discovery §4.3: the document's issuer must be exactly the one asked for.
  if (doc.issuer !== cfg.issuer) {
    throw new AuthError(
      'unavailable',
      `OIDC discovery at ${url}: issuer is '${String(doc.issuer)}', expected '${cfg.issuer}'`,
    );
  }
  if (typeof doc.jwks_uri !== 'string' || !/^https?:\/\//.test(doc.jwks_uri)) {
    throw new AuthError('unavailable', `OIDC discovery at ${url}: no usable jwks_uri`);
  }
  return doc.jwks_uri;
}

export class JwtVerifier implements TokenVerifier {
  private keys: Promise<ReturnType<typeof createRemoteJWKSet>> | undefined;

  constructor(private readonly cfg: JwtAuthConfig) {
    if (!cfg.issuer) throw new Error('jwt token auth: issuer is required');
    if (!cfg.audiences?.length) throw new Error('jwt token auth: at least one audience is required');
    if (cfg.jwksUrl !== undefined) new URL(cfg.jwksUrl); // a bad URL is a configuration error now
  }

  private keySet(): Promise<ReturnType<typeof createRemoteJWKSet>> {
    if (!this.keys) {
      const make = (uri: string) =>
        createRemoteJWKSet(new URL(uri), {
          timeoutDuration: this.cfg.timeoutMs ?? 5000,
          [customFetch]: fetcher(this.cfg),
        });
      this.keys = (this.cfg.jwksUrl ? Promise.resolve(this.cfg.jwksUrl) : discoverJwksUri(this.cfg)).then(
        make,
      );
      // A failed discovery is retried by the next verify, not cached forever.
      this.keys.catch(() => {
        this.keys = undefined;
      });
    }
    return this.keys;
  }

  async verify(token: string): Promise<VerifiedToken> {
    if (typeof token !== 'string' || token.length === 0 || token.length > MAX_TOKEN_LENGTH) {
      throw new AuthError('malformed', 'token is empty or too long');
    }
    let alg: unknown;
    try {
      alg = decodeProtectedHeader(token).alg;
    } catch {
      throw new AuthError('malformed', 'token is not a valid signed JWT');
    }
    if (typeof alg !== 'string' || alg.toLowerCase() === 'none') {
      throw new AuthError('bad_signature', 'token is not signed (alg none)');
    }
    const algorithms = this.cfg.algorithms ?? DEFAULT_ALGORITHMS;
    if (!algorithms.includes(alg))
      throw new AuthError('bad_signature', `token algorithm ${alg} is not allowed`);
    const keys = await this.keySet();
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, keys, {
        issuer: this.cfg.issuer,
        audience: this.cfg.audiences,
        clockTolerance: this.cfg.clockToleranceSeconds ?? 30,
        algorithms,
        requiredClaims: ['exp'],
      }));
    } catch (err) {
      throw joseFailure(err);
    }
    return {
      user: userOf(payload, this.cfg.userClaim),
      groups: groupsOf(payload, this.cfg.groupsClaim ?? 'groups'),
      claims: { ...payload },
    };
  }
}
