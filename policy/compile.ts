/**
 * Compile a DatabasePolicy and its MaskingRules into the CompiledPolicy that proxies enforce
 * (api/compiled.ts). Pure: Secrets come in through a lookup function. Everything a proxy would
 * otherwise have to interpret is settled here: defaults, name case and schemas, subject
 * namespaces, durations in seconds, Hash key ids and CA certificates, and the version.
 */
import {
  COMPILED_FORMAT,
  type CompiledMaskedColumn,
  type CompiledMaskingRule,
  type CompiledPolicy,
  type CompiledRule,
  type UpstreamCredentials,
} from '../api/compiled.js';
import { DEFAULTS } from '../api/defaults.js';
import { parseDottedName, qualify } from '../api/identifiers.js';
import type {
  DatabasePolicy,
  MaskedColumnSpec,
  MaskingRule,
  PolicyFileResource,
  PolicyRule,
  SecretDoc,
  Subject,
} from '../api/types.js';
import { validateResource } from '../api/validate.js';
import { canonicalJson, policyVersion } from '../api/version.js';
import { DurationError, parsePositiveDuration } from './duration.js';
import { hashKeyId } from './hash-key.js';

/** A problem with a resource, named precisely enough to fix it. */
export interface PolicyError {
  /** field path in the resource: `spec.rules[2].approval`; empty for the resource as a whole */
  path: string;
  message: string;
  /** `Kind namespace/name` of the resource the path is in */
  resource?: string;
  /** the policy file and 1-based document number, when the resource came from a file */
  file?: string;
  document?: number;
}

export type CompileResult = { ok: true; compiled: CompiledPolicy } | { ok: false; errors: PolicyError[] };

/** The value of `key` in the Secret `name` of the policy's namespace, if known. */
export type SecretLookup = (name: string, key: string) => string | undefined;

/** `file: document 2 (DatabasePolicy shop/orders): spec.rules[1].approval: message` */
export function formatPolicyError(e: PolicyError): string {
  const where: string[] = [];
  if (e.file !== undefined)
    where.push(e.document !== undefined ? `${e.file}: document ${e.document}` : e.file);
  const head = where.join('');
  const resource = e.resource ? (head ? ` (${e.resource})` : e.resource) : '';
  const prefix = head + resource;
  return [prefix, e.path, e.message].filter((s) => s !== '').join(': ');
}

export function namespaceOf(o: { metadata?: { namespace?: string } }): string {
  return o.metadata?.namespace || DEFAULTS.namespace;
}

export function resourceName(o: { kind?: string; metadata?: { name?: string; namespace?: string } }): string {
  return `${o.kind} ${namespaceOf(o)}/${o.metadata?.name ?? '?'}`;
}

/** Collects errors for one resource into a list shared by every resource of a compilation. */
class Errors {
  constructor(
    private resource: string,
    readonly list: PolicyError[] = [],
  ) {}
  add(path: string, message: string) {
    this.list.push({ resource: this.resource, path, message });
  }
  /** the same list, for errors about another resource */
  for(resource: string): Errors {
    return new Errors(resource, this.list);
  }
}

function compileSubject(s: Subject, namespace: string): Subject {
  if (s.kind === 'ServiceAccount') return { kind: s.kind, name: s.name, namespace: s.namespace ?? namespace };
  return { kind: s.kind, name: s.name };
}

function compileObjectPattern(text: string, path: string, errors: Errors): string | undefined {
  const parsed = parseDottedName(text, { wildcard: true });
  if (!parsed.ok) {
    errors.add(path, parsed.message);
    return undefined;
  }
  const parts = text === '*' ? ['*', '*'] : qualify(parsed.parts);
  // The compiled form is `schema.name` with `*` as wildcard; a quoted name holding `.` or `*`
  // could not be told apart from the syntax.
  if (parts.some((p) => p !== '*' && /[.*]/.test(p))) {
    errors.add(
      path,
      `${JSON.stringify(text)}: quoted names containing "." or "*" are not supported in patterns`,
    );
    return undefined;
  }
  return parts.join('.');
}

function compileDuration(text: string, path: string, errors: Errors): number {
  try {
    return parsePositiveDuration(text);
  } catch (e) {
    errors.add(path, e instanceof DurationError ? e.message : String(e));
    return 0;
  }
}

function compileRule(r: PolicyRule, i: number, namespace: string, errors: Errors): CompiledRule {
  const at = `spec.rules[${i}]`;
  const match: CompiledRule['match'] = {};
  if (r.match?.commands)
    match.commands = r.match.commands.map((c) => c.trim().replace(/\s+/g, ' ').toUpperCase());
  if (r.match?.objects) {
    match.objects = r.match.objects
      .map((o, j) => compileObjectPattern(o, `${at}.match.objects[${j}]`, errors))
      .filter((o): o is string => o !== undefined);
  }
  if (r.match?.withoutWhere !== undefined) match.withoutWhere = r.match.withoutWhere;
  if (r.match?.subjects) match.subjects = r.match.subjects.map((s) => compileSubject(s, namespace));
  const out: CompiledRule = { name: r.name, action: r.action, match };
  if (r.message !== undefined) out.message = r.message;
  if (r.action === 'RequireApproval') {
    out.approval = {
      mode: r.approval?.mode ?? DEFAULTS.approvalMode,
      timeoutSeconds: compileDuration(
        r.approval?.timeout ?? DEFAULTS.approvalTimeout,
        `${at}.approval.timeout`,
        errors,
      ),
      validForSeconds: compileDuration(
        r.approval?.validFor ?? DEFAULTS.approvalValidFor,
        `${at}.approval.validFor`,
        errors,
      ),
      ...(r.approval?.maxExecutions !== undefined ? { maxExecutions: r.approval.maxExecutions } : {}),
    };
  }
  return out;
}

function compileUpstream(
  policy: DatabasePolicy,
  secrets: SecretLookup,
  namespace: string,
  errors: Errors,
): CompiledPolicy['upstream'] {
  const u = policy.spec.upstream;
  const out: CompiledPolicy['upstream'] = {
    host: u.host,
    port: u.port ?? DEFAULTS.port,
    sslmode: u.sslmode ?? DEFAULTS.sslmode,
  };
  if (u.caSecretRef) {
    const pem = secrets(u.caSecretRef.name, u.caSecretRef.key);
    if (pem === undefined) {
      errors.add(
        'spec.upstream.caSecretRef',
        missingSecret(u.caSecretRef.name, u.caSecretRef.key, namespace),
      );
    } else if (!pem.includes('-----BEGIN CERTIFICATE-----')) {
      errors.add(
        'spec.upstream.caSecretRef',
        `Secret ${namespace}/${u.caSecretRef.name} key "${u.caSecretRef.key}" does not hold a PEM certificate`,
      );
    } else {
      out.caPem = pem;
    }
  }
  // Only the name: the credentials are never compiled in, even when the lookup knows them (a Secret
  // that also holds the CA or a salt). The sidecar reads them from its mount.
  if (u.credentialsSecretRef) out.credentialsSecret = u.credentialsSecretRef.name;
  return out;
}

/**
 * Standalone mode: the credentials of `credentialsSecretRef` from a Secret document in the policy files,
 * for the proxy to hold beside (never inside) the compiled policy. Both keys or neither (the Secret is
 * mounted instead); one without the other is a mistake.
 */
function standaloneCredentials(
  policy: DatabasePolicy,
  secrets: SecretLookup,
): { credentials?: UpstreamCredentials; error?: PolicyError } {
  const name = policy.spec?.upstream?.credentialsSecretRef?.name;
  if (!name) return {};
  const username = secrets(name, 'username');
  const password = secrets(name, 'password');
  if (username !== undefined && password !== undefined) return { credentials: { username, password } };
  if (username === undefined && password === undefined) return {};
  return {
    error: {
      resource: resourceName({ ...policy, kind: 'DatabasePolicy' }),
      path: 'spec.upstream.credentialsSecretRef',
      message: `Secret ${namespaceOf(policy)}/${name} must have both keys "username" and "password" (missing "${username === undefined ? 'username' : 'password'}")`,
    },
  };
}

function missingSecret(name: string, key: string, namespace: string): string {
  return `Secret ${namespace}/${name} with key "${key}" not found`;
}

interface ColumnSite {
  rule: string;
  path: string;
  column: CompiledMaskedColumn;
}

function compileColumn(
  c: MaskedColumnSpec,
  path: string,
  secrets: SecretLookup,
  namespace: string,
  errors: Errors,
): CompiledMaskedColumn | undefined {
  const table = parseDottedName(c.table);
  const column = parseDottedName(c.column, { maxParts: 1 });
  if (!table.ok) errors.add(`${path}.table`, table.message);
  if (!column.ok) errors.add(`${path}.column`, column.message);
  if (!table.ok || !column.ok) return undefined;
  const [schema, tableName] = qualify(table.parts);
  const out: CompiledMaskedColumn = {
    schema,
    table: tableName,
    column: column.parts[0]!,
    strategy: c.strategy,
  };
  switch (c.strategy) {
    case 'Partial':
      out.partial = {
        keepFirst: c.partial?.keepFirst ?? DEFAULTS.partialKeepFirst,
        keepLast: c.partial?.keepLast ?? DEFAULTS.partialKeepLast,
        maskChar: c.partial?.maskChar ?? DEFAULTS.partialMaskChar,
      };
      break;
    case 'Hash': {
      const ref = c.hash?.saltSecretRef;
      if (!ref) {
        errors.add(`${path}.hash.saltSecretRef`, 'is required for strategy Hash');
        return undefined;
      }
      const salt = secrets(ref.name, ref.key);
      if (salt === undefined)
        errors.add(`${path}.hash.saltSecretRef`, missingSecret(ref.name, ref.key, namespace));
      else if (salt === '')
        errors.add(`${path}.hash.saltSecretRef`, `Secret ${namespace}/${ref.name} key "${ref.key}" is empty`);
      // The key stays in the Secret (and, through `dbguard db install`, in the database): the compiled
      // policy carries only its id. The lookup above still reports a missing or empty key early.
      else out.hash = { keyId: hashKeyId(namespace, ref) };
      break;
    }
    case 'Constant':
      if (!c.constant) {
        errors.add(`${path}.constant`, 'constant.value is required for strategy Constant');
        return undefined;
      }
      out.constant = { value: c.constant.value };
      break;
    case 'Generalize':
      if (c.generalize?.unit !== undefined) out.generalize = { unit: c.generalize.unit };
      else if (c.generalize?.step !== undefined) out.generalize = { step: c.generalize.step };
      else {
        errors.add(
          `${path}.generalize`,
          'generalize.unit or generalize.step is required for strategy Generalize',
        );
        return undefined;
      }
      break;
  }
  return out;
}

function describeMasking(c: CompiledMaskedColumn): string {
  const { schema: _s, table: _t, column: _c, ...how } = c;
  return canonicalJson(how);
}

function quoteIfNeeded(name: string): string {
  return /^[a-z_][a-z0-9_$]*$/.test(name) ? name : `"${name.replace(/"/g, '""')}"`;
}

export function columnName(c: { schema: string; table: string; column: string }): string {
  return [c.schema, c.table, c.column].map(quoteIfNeeded).join('.');
}

function compileMasking(
  rules: MaskingRule[],
  secrets: SecretLookup,
  namespace: string,
  errors: Errors,
): CompiledMaskingRule[] {
  const sites = new Map<string, ColumnSite>();
  const out: CompiledMaskingRule[] = [];
  const sorted = [...rules].sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
  for (const mr of sorted) {
    const name = `${namespace}/${mr.metadata.name}`;
    const e = errors.for(`MaskingRule ${name}`);
    const columns: CompiledMaskedColumn[] = [];
    mr.spec.columns.forEach((c, i) => {
      const path = `spec.columns[${i}]`;
      const col = compileColumn(c, path, secrets, namespace, e);
      if (!col) return;
      const key = canonicalJson([col.schema, col.table, col.column]);
      const seen = sites.get(key);
      if (seen) {
        const where = seen.rule === name ? seen.path : `MaskingRule ${seen.rule} (${seen.path})`;
        if (seen.rule === name) {
          e.add(path, `column ${columnName(col)} is listed twice in this rule (also ${where})`);
          return;
        }
        if (describeMasking(seen.column) !== describeMasking(col)) {
          e.add(
            path,
            `column ${columnName(col)} is masked with ${col.strategy} here but differently by ${where} ` +
              `(${seen.column.strategy}); a column can be masked only one way`,
          );
          return;
        }
      } else {
        sites.set(key, { rule: name, path, column: col });
      }
      columns.push(col);
    });
    // Order within a rule changes nothing a proxy does; sorting keeps the version independent of it.
    columns.sort((a, b) => columnName(a).localeCompare(columnName(b)));
    const exemptSubjects = (mr.spec.exemptSubjects ?? [])
      .map((s) => compileSubject(s, namespace))
      .sort((a, b) => canonicalJson(a).localeCompare(canonicalJson(b)));
    out.push({ name, columns, exemptSubjects });
  }
  return out;
}

function compileFunctions(allow: string[], errors: Errors): string[] {
  const out = new Set<string>();
  allow.forEach((f, i) => {
    const parsed = parseDottedName(f);
    if (!parsed.ok) errors.add(`spec.functions.allow[${i}]`, parsed.message);
    else out.add(qualify(parsed.parts).join('.'));
  });
  return [...out].sort();
}

/** Whether a MaskingRule is bound to the policy: same namespace, spec.policyRef.name is its name. */
export function isBound(mr: MaskingRule, policy: DatabasePolicy): boolean {
  return namespaceOf(mr) === namespaceOf(policy) && mr.spec?.policyRef?.name === policy.metadata?.name;
}

/**
 * Compile `policy` with the MaskingRules bound to it (others in `maskingRules` are ignored).
 * The resources are validated against their schemas first, so any object, even one that skipped
 * the API server, gets field errors rather than a crash.
 */
export function compilePolicy(
  policy: DatabasePolicy,
  maskingRules: MaskingRule[],
  secrets: SecretLookup,
): CompileResult {
  const policyName = resourceName({ ...policy, kind: 'DatabasePolicy' });
  const errors = new Errors(policyName);
  const checked = validateResource(policy, { kind: 'DatabasePolicy' });
  if (!checked.ok) for (const fe of checked.errors) errors.add(fe.path, fe.message);
  const namespace = namespaceOf(policy);
  const bound: MaskingRule[] = [];
  for (const mr of maskingRules) {
    if (!isBound(mr, policy)) continue;
    const v = validateResource(mr, { kind: 'MaskingRule' });
    if (v.ok) bound.push(v.resource);
    else
      for (const fe of v.errors)
        errors.for(resourceName({ ...mr, kind: 'MaskingRule' })).add(fe.path, fe.message);
  }
  if (!checked.ok || errors.list.length) return { ok: false, errors: errors.list };
  const p = checked.resource;
  const spec = p.spec;
  const body: Omit<CompiledPolicy, 'version'> = {
    format: COMPILED_FORMAT,
    policy: `${namespace}/${p.metadata.name}`,
    upstream: compileUpstream(p, secrets, namespace, errors),
    defaultAction: spec.defaultAction ?? DEFAULTS.defaultAction,
    rules: (spec.rules ?? []).map((r, i) => compileRule(r, i, namespace, errors)),
    functionsAllow: compileFunctions(spec.functions?.allow ?? [], errors),
    audit: { statements: spec.audit?.statements ?? DEFAULTS.auditStatements },
    enforcement: spec.enforcement ?? DEFAULTS.enforcement,
    masking: compileMasking(bound, secrets, namespace, errors),
  };
  if (errors.list.length) return { ok: false, errors: errors.list };
  const compiled: CompiledPolicy = { ...body, version: policyVersion(body) };
  return { ok: true, compiled };
}

/** A SecretLookup over Secret documents of one namespace (standalone mode). */
export function secretLookup(docs: SecretDoc[], namespace: string): SecretLookup {
  return (name, key) => {
    const doc = docs.find((d) => d.metadata.name === name && namespaceOf(d) === namespace);
    if (!doc) return undefined;
    const s = doc.stringData?.[key];
    if (s !== undefined) return s;
    const b64 = doc.data?.[key];
    return b64 === undefined ? undefined : Buffer.from(b64, 'base64').toString('utf8');
  };
}

export type SelectResult =
  | {
      ok: true;
      compiled: CompiledPolicy;
      policy: DatabasePolicy;
      maskingRules: MaskingRule[];
      /** from a Secret document of the files, for the proxy to log in with; never in `compiled` */
      credentials?: UpstreamCredentials;
    }
  | { ok: false; errors: PolicyError[] };

/**
 * Pick the DatabasePolicy `namespace/name` (or the only one when no name is given) from the
 * resources of policy files, and compile it with its MaskingRules and Secrets. A MaskingRule that
 * names a policy the files do not hold is an error: a typo there would leave columns unmasked.
 */
export function selectPolicy(resources: PolicyFileResource[], name: string | undefined): SelectResult {
  const policies = resources.filter((r): r is DatabasePolicy => r.kind === 'DatabasePolicy');
  const maskingRules = resources.filter((r): r is MaskingRule => r.kind === 'MaskingRule');
  const secrets = resources.filter((r): r is SecretDoc => r.kind === 'Secret');
  const fullName = (p: DatabasePolicy) => `${namespaceOf(p)}/${p.metadata.name}`;
  const available = policies.map(fullName).join(', ') || 'none';
  let policy: DatabasePolicy | undefined;
  if (name === undefined || name === '') {
    if (policies.length !== 1) {
      const message =
        policies.length === 0
          ? 'no DatabasePolicy found in the policy files'
          : `${policies.length} DatabasePolicies found (${available}): name one with --policy NAMESPACE/NAME`;
      return { ok: false, errors: [{ path: '', message }] };
    }
    policy = policies[0]!;
  } else {
    if (!/^[^/]+\/[^/]+$/.test(name)) {
      return {
        ok: false,
        errors: [{ path: '', message: `policy ${JSON.stringify(name)} must be NAMESPACE/NAME` }],
      };
    }
    policy = policies.find((p) => fullName(p) === name);
    if (!policy) {
      return {
        ok: false,
        errors: [{ path: '', message: `DatabasePolicy ${name} not found (available: ${available})` }],
      };
    }
  }
  const orphans: PolicyError[] = maskingRules
    .filter((mr) => !policies.some((p) => isBound(mr, p)))
    .map((mr) => ({
      resource: resourceName(mr),
      path: 'spec.policyRef.name',
      message: `DatabasePolicy ${namespaceOf(mr)}/${mr.spec?.policyRef?.name} not found`,
    }));
  const lookup = secretLookup(secrets, namespaceOf(policy));
  const result = compilePolicy(policy, maskingRules, lookup);
  const creds = standaloneCredentials(policy, lookup);
  if (!result.ok || orphans.length || creds.error) {
    return {
      ok: false,
      errors: [...orphans, ...(result.ok ? [] : result.errors), ...(creds.error ? [creds.error] : [])],
    };
  }
  return {
    ok: true,
    compiled: result.compiled,
    policy,
    maskingRules: maskingRules.filter((mr) => isBound(mr, policy)),
    ...(creds.credentials ? { credentials: creds.credentials } : {}),
  };
}
