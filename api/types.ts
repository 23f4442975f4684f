/**
 * The custom resources of group dbguard.io/v1alpha1 (contract §1), as TypeScript types.
 * The JSON schemas in `api/schemas.ts` are the one source for validation and for `crds/`;
 * these types mirror them for the code.
 */

export const GROUP = 'dbguard.io';
export const VERSION = 'v1alpha1';
export const API_VERSION = `${GROUP}/${VERSION}`;

export interface ObjectMeta {
  name: string;
  namespace?: string;
  uid?: string;
  generation?: number;
  resourceVersion?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  creationTimestamp?: string;
}

export interface Condition {
  type: string;
  status: 'True' | 'False' | 'Unknown';
  reason: string;
  message: string;
  lastTransitionTime?: string;
  observedGeneration?: number;
}

export type SubjectKind = 'ServiceAccount' | 'User' | 'Group' | 'DatabaseUser';

export interface Subject {
  kind: SubjectKind;
  name: string;
  /** ServiceAccount only; defaults to the policy's namespace */
  namespace?: string;
}

export interface SecretKeyRef {
  name: string;
  key: string;
}

/** libpq's sslmode values, weakest first (sidecar/upstream.ts follows libpq's meaning of each). */
export const SSL_MODES = ['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full'] as const;
export type SslMode = (typeof SSL_MODES)[number];
export type RuleAction = 'Allow' | 'Deny' | 'RequireApproval';

export interface PolicyRule {
  name: string;
  action: RuleAction;
  match?: {
    commands?: string[];
    objects?: string[];
    withoutWhere?: boolean;
    subjects?: Subject[];
  };
  message?: string;
  approval?: {
    mode?: 'Wait' | 'Reject';
    /** Go-style duration: 30s, 5m, 1h */
    timeout?: string;
    validFor?: string;
    /** Binds of an approved prepared statement; default 1 */
    maxExecutions?: number;
  };
}

export interface DatabasePolicySpec {
  upstream: {
    host: string;
    port?: number;
    sslmode?: SslMode;
    caSecretRef?: SecretKeyRef;
    credentialsSecretRef?: { name: string };
  };
  defaultAction?: 'Allow' | 'Deny';
  rules?: PolicyRule[];
  functions?: { allow?: string[] };
  audit?: { statements?: 'All' | 'Writes' | 'Denied' | 'None' };
  enforcement?: 'Enforce' | 'DryRun';
}

export interface DatabasePolicyStatus {
  observedGeneration?: number;
  conditions?: Condition[];
  policyVersion?: string;
  /** number of rules in the compiled policy (printer column Rules) */
  rules?: number;
  maskingRules?: number;
}

export interface DatabasePolicy {
  apiVersion: typeof API_VERSION;
  kind: 'DatabasePolicy';
  metadata: ObjectMeta;
  spec: DatabasePolicySpec;
  status?: DatabasePolicyStatus;
}

export type MaskingStrategy = 'Redact' | 'Nullify' | 'Partial' | 'Email' | 'Hash' | 'Constant' | 'Generalize';

export interface MaskedColumnSpec {
  /** `schema.table` or `table` (schema public) */
  table: string;
  column: string;
  strategy: MaskingStrategy;
  partial?: { keepFirst?: number; keepLast?: number; maskChar?: string };
  hash?: { saltSecretRef?: SecretKeyRef };
  constant?: { value: string };
  generalize?: { unit?: 'year' | 'month' | 'day'; step?: number };
}

export interface MaskingRuleSpec {
  policyRef: { name: string };
  columns: MaskedColumnSpec[];
  exemptSubjects?: Subject[];
}

export interface MaskingRule {
  apiVersion: typeof API_VERSION;
  kind: 'MaskingRule';
  metadata: ObjectMeta;
  spec: MaskingRuleSpec;
  /** `columns`: number of masked columns (printer column Columns) */
  status?: { observedGeneration?: number; conditions?: Condition[]; columns?: number };
}

export interface ApprovalSubject {
  serviceAccount?: string;
  pod?: string;
  user?: string;
  groups?: string[];
  databaseUser?: string;
}

export interface ApprovalRequest {
  apiVersion: typeof API_VERSION;
  kind: 'ApprovalRequest';
  metadata: ObjectMeta;
  spec: {
    policyRef: { name: string };
    rule: string;
    subject: ApprovalSubject;
    database: string;
    statement: string;
    fingerprint: string;
    expiresAt: string;
    decision?: 'Approved' | 'Denied';
    reason?: string;
  };
  status?: {
    phase?: 'Pending' | 'Approved' | 'Denied' | 'Expired';
    decidedBy?: string;
    decidedAt?: string;
    conditions?: Condition[];
  };
}

/** A Secret as it may appear in a policy file (standalone mode: salts, upstream credentials). */
export interface SecretDoc {
  apiVersion: 'v1';
  kind: 'Secret';
  metadata: ObjectMeta;
  data?: Record<string, string>;
  stringData?: Record<string, string>;
}

export type DbguardResource = DatabasePolicy | MaskingRule | ApprovalRequest;

/** Any document a policy file may hold. */
export type PolicyFileResource = DbguardResource | SecretDoc;
