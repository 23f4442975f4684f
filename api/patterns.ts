/**
 * Regular expressions the schemas use (`pattern`), with a human description for error messages.
 * They are written in the common subset of ECMAScript and RE2 syntax, because the Kubernetes API
 * server (Go, RE2) and our validator (ajv, ECMAScript) both evaluate them.
 */

/** A PostgreSQL identifier as a user writes it: unquoted, or double-quoted with `""` for a quote. */
const IDENT = '([A-Za-z_][A-Za-z0-9_$]*|"([^"]|"")+")';
const IDENT_OR_STAR = `(\\*|${IDENT})`;

export interface NamedPattern {
  pattern: string;
  /** what a matching value looks like, for messages: "must be <describe>" */
  describe: string;
}

function named(pattern: string, describe: string): NamedPattern {
  return { pattern, describe };
}

export const PATTERNS = {
  /** Go-style duration: 30s, 5m, 1h30m, 1.5h, 500ms */
  duration: named('^([0-9]+(\\.[0-9]+)?(h|m|s|ms))+$', 'a duration such as 30s, 5m or 1h30m'),
  /** DNS-1123 subdomain: names of Secrets, DatabasePolicies, ServiceAccounts */
  dnsSubdomain: named(
    '^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$',
    'a lower-case DNS-1123 subdomain name (a-z, 0-9, "-", ".")',
  ),
  /** DNS-1123 label: namespaces, and rule names (they appear in client errors, audit events, metric labels) */
  dnsLabel: named('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$', 'a lower-case DNS-1123 label (a-z, 0-9, "-")'),
  /** a key of a Secret's data */
  secretKey: named('^[-._a-zA-Z0-9]+$', 'a Secret key (letters, digits, "-", "_", ".")'),
  /** a command-tag pattern: `SELECT`, `TRUNCATE TABLE`, `DROP *`, `*` */
  command: named(
    '^(\\*|[A-Za-z]+( [A-Za-z]+)*( \\*)?)$',
    'a command tag such as SELECT, TRUNCATE TABLE, DROP * or *',
  ),
  /** a relation pattern: `public.*`, `*.audit_log`, `orders`, `"Sales"."Q1"` */
  objectPattern: named(
    `^${IDENT_OR_STAR}(\\.${IDENT_OR_STAR})?$`,
    'a relation pattern such as public.orders, public.*, *.audit_log or orders',
  ),
  /** a table or function name: `public.customers`, `customers`, `"Sales"."Q1"` */
  qualifiedName: named(
    `^${IDENT}(\\.${IDENT})?$`,
    'a name such as public.customers or customers (schema public when omitted)',
  ),
  /** one column name */
  columnName: named(`^${IDENT}$`, 'a column name such as email or "Email"'),
  /** no whitespace, no slash: a host name or IP address */
  host: named('^[^\\s/]+$', 'a host name or IP address (no spaces, no scheme, no path)'),
  /** `namespace/name` of a ServiceAccount */
  serviceAccountRef: named('^[a-z0-9-]+/[a-z0-9.-]+$', 'namespace/name of a ServiceAccount'),
} as const satisfies Record<string, NamedPattern>;

const byPattern = new Map<string, string>(Object.values(PATTERNS).map((p) => [p.pattern, p.describe]));

/** The human description of a schema pattern, or undefined for a pattern not in the table. */
export function describePattern(pattern: string): string | undefined {
  return byPattern.get(pattern);
}
