/**
 * The compiled policy: what the operator serves and the sidecar enforces. Plain JSON, versioned by
 * the SHA-256 of its canonical form (`version`), so a sidecar can tell two policies apart by one
 * string and the operator can answer If-None-Match.
 */
import type { MaskingStrategy, RuleAction, SslMode, Subject } from './types.js';

/**
 * v2: Hash columns carry a key id instead of the salt (policy/hash-key.ts). A v1 sidecar would read a
 * v2 policy's missing salt as an empty one and hash unsalted; it refuses the new format instead and
 * keeps its last-known-good policy until its pod is replaced.
 */
export const COMPILED_FORMAT = 'dbguard.io/compiled-policy/v2';

/** The upstream login a proxy holds; never part of a CompiledPolicy. */
export interface UpstreamCredentials {
  username: string;
  password: string;
}

export interface CompiledRule {
  name: string;
  action: RuleAction;
  /** Every field present must match (AND); a list matches if any entry does (OR). */
  match: {
    /** command-tag patterns, upper case: `DROP *`, `TRUNCATE TABLE`, `*` */
    commands?: string[];
    /** relation patterns, lower case unless quoted in the resource: `public.*`, `*.audit_log` */
    objects?: string[];
    withoutWhere?: boolean;
    /** ServiceAccount subjects always carry a namespace here (defaulted from the policy's) */
    subjects?: Subject[];
  };
  message?: string;
  approval?: {
    mode: 'Wait' | 'Reject';
    timeoutSeconds: number;
    validForSeconds: number;
    /** Binds of an approved prepared statement; absent: 1 (absent, not 1, so older policies keep their version) */
    maxExecutions?: number;
  };
}

export interface CompiledMaskedColumn {
  schema: string;
  table: string;
  column: string;
  strategy: MaskingStrategy;
  partial?: { keepFirst: number; keepLast: number; maskChar: string };
  /**
   * Hash: the id of the key in the database's `dbguard` key table (`namespace/secret/key` of
   * saltSecretRef). Never the key itself: `dbguard db install` puts the key into the database, and
   * the rewrite calls `dbguard.hash(value, keyId)` (policy/hash-key.ts).
   */
  hash?: { keyId: string };
  constant?: { value: string };
  generalize?: { unit?: 'year' | 'month' | 'day'; step?: number };
}

export interface CompiledMaskingRule {
  /** `namespace/name` of the MaskingRule */
  name: string;
  columns: CompiledMaskedColumn[];
  /** ServiceAccount subjects always carry a namespace here */
  exemptSubjects: Subject[];
}

export interface CompiledPolicy {
  format: typeof COMPILED_FORMAT;
  /** `namespace/name` of the DatabasePolicy */
  policy: string;
  /** `sha256:<hex>` of the canonical JSON of everything below except `version` itself */
  version: string;
  upstream: {
    host: string;
    port: number;
    sslmode: SslMode;
    /** PEM of the CA, resolved from caSecretRef when given */
    caPem?: string;
    /**
     * Name of the Secret with username/password. Only the name: the credentials themselves never travel
     * in a compiled policy (docs/security.md); the sidecar reads them from its mounted Secret, and
     * standalone mode from the Secret document of its policy file (`UpstreamCredentials`, beside it).
     */
    credentialsSecret?: string;
  };
  defaultAction: 'Allow' | 'Deny';
  rules: CompiledRule[];
  /** schema-qualified, lower case: `public.order_total` */
  functionsAllow: string[];
  audit: { statements: 'All' | 'Writes' | 'Denied' | 'None' };
  enforcement: 'Enforce' | 'DryRun';
  masking: CompiledMaskingRule[];
}
