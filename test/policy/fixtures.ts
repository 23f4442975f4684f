/** Shared fixtures for the policy tests: a compiled policy builder, identities, a catalog loader. */
import type pg from 'pg';
import {
  COMPILED_FORMAT,
  type CompiledMaskedColumn,
  type CompiledPolicy,
  type CompiledRule,
} from '../../api/compiled.js';
import { type CatalogSnapshot, catalogQuery, parseCatalog } from '../../policy/catalog.js';
import type { Identity } from '../../policy/identity.js';
import type { SessionContext } from '../../policy/resolve.js';

export function policyOf(p: Partial<CompiledPolicy> = {}): CompiledPolicy {
  return {
    format: COMPILED_FORMAT,
    policy: 'shop/orders',
    version: 'sha256:test',
    upstream: { host: 'localhost', port: 5432, sslmode: 'disable' },
    defaultAction: 'Allow',
    rules: [],
    functionsAllow: [],
    audit: { statements: 'All' },
    enforcement: 'Enforce',
    masking: [],
    ...p,
  };
}

export function rule(
  name: string,
  action: CompiledRule['action'],
  match: CompiledRule['match'],
  message?: string,
): CompiledRule {
  return { name, action, match, ...(message ? { message } : {}) };
}

/** The contract's sample masking of a customers table in `schema`. */
export function customerMasking(schema: string, table = 'customers'): CompiledMaskedColumn[] {
  const c = (
    column: string,
    strategy: CompiledMaskedColumn['strategy'],
    extra: Partial<CompiledMaskedColumn> = {},
  ) => ({
    schema,
    table,
    column,
    strategy,
    ...extra,
  });
  return [
    c('email', 'Email'),
    c('ssn', 'Redact'),
    c('card_number', 'Partial', { partial: { keepFirst: 0, keepLast: 4, maskChar: '*' } }),
    c('salary', 'Nullify'),
    c('birth_date', 'Generalize', { generalize: { unit: 'year' } }),
    c('customer_ref', 'Hash', { hash: { keyId: 'shop/pii-salt/salt' } }),
    c('country', 'Constant', { constant: { value: 'XX' } }),
  ];
}

export const masked: Identity = {
  groups: ['developers'],
  databaseUser: 'app',
  serviceAccount: 'shop/checkout',
};
export const exempt: Identity = {
  groups: ['pii-readers'],
  databaseUser: 'app',
  serviceAccount: 'shop/reporting',
};

export function maskingPolicy(schema: string, extra: Partial<CompiledPolicy> = {}): CompiledPolicy {
  return policyOf({
    masking: [
      {
        name: 'shop/customer-pii',
        columns: customerMasking(schema),
        exemptSubjects: [{ kind: 'Group', name: 'pii-readers' }],
      },
    ],
    ...extra,
  });
}

export async function loadCatalog(client: pg.Client, policy: CompiledPolicy): Promise<CatalogSnapshot> {
  const r = await client.query({ text: catalogQuery(policy), rowMode: 'array' });
  return parseCatalog(r.rows as (string | null)[][]);
}

export function sessionOf(
  identity: Identity,
  catalog?: CatalogSnapshot,
  database = 'postgres',
): SessionContext {
  return { identity, database, searchPath: catalog?.searchPath ?? ['pg_catalog', 'public'], catalog };
}
