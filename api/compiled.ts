/**
 * The compiled policy: what the operator serves and the sidecar enforces. Plain JSON, versioned by
 * the SHA-256 of its canonical form (`version`), so a sidecar can tell two policies apart by one
 * string and the operator can answer If-None-Match.
 */
import type { MaskingStrategy, RuleAction, SslMode, Subject } from './types.js';

export const COMPILED_FORMAT = 'dbguard.io/compiled-policy/v1';

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
  /** the salt itself (resolved from the Secret at compile time) */
  hash?: { salt: string };
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
