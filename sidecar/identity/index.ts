/**
 * Identity for the sidecar: which workload it speaks for (workload.ts) and who a client's token
 * names (TokenVerifier: jwt.ts or tokenreview.ts, chosen by TokenAuthConfig).
 */
import { type JwtAuthConfig, JwtVerifier } from './jwt.js';
import type { TokenVerifier } from './token.js';
import { type TokenReviewAuthConfig, TokenReviewVerifier } from './tokenreview.js';

export type { JwtAuthConfig } from './jwt.js';
export { DEFAULT_ALGORITHMS, JwtVerifier } from './jwt.js';
export type { AuthFailureReason, TokenVerifier, VerifiedToken } from './token.js';
export { AUTH_FAILURE_REASONS, AuthError, looksLikeJwt } from './token.js';
export type { TokenReviewAuthConfig } from './tokenreview.js';
export { TokenReviewVerifier } from './tokenreview.js';
export type { WorkloadFlags, WorkloadIdentity } from './workload.js';
export {
  ENV_POD_NAME,
  ENV_POD_NAMESPACE,
  ENV_SERVICE_ACCOUNT,
  IdentityConfigError,
  workloadIdentity,
} from './workload.js';

export type TokenAuthConfig = JwtAuthConfig | TokenReviewAuthConfig;

export function createTokenVerifier(
  config: TokenAuthConfig,
  env: NodeJS.ProcessEnv = process.env,
): TokenVerifier {
  switch (config.type) {
    case 'jwt':
      return new JwtVerifier(config);
    case 'tokenreview':
      return new TokenReviewVerifier(config, env);
    default:
      throw new Error(
        `token auth: unknown type '${(config as { type?: unknown }).type}' (jwt or tokenreview)`,
      );
  }
}
