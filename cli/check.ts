/**
 * `dbguard check`: what would the proxy do with this statement for this identity? Prints the decision,
 * the matched rule, per statement its command and objects, and the SQL that would be sent upstream,
 * as JSON. No upstream is needed for rules; masking needs the table's column list, which `--upstream`
 * reads from the database (as the proxy does on the client's session).
 */
import fs from 'node:fs';
import type { Identity } from '../policy/identity.js';
import { CliError, explainConnectFailure, postgresUrlProblem, redactUrl, unreadable } from './errors.js';
import { type FlagSpec, helpText, parseFlags, UsageError } from './flags.js';

const FLAGS: FlagSpec[] = [
  {
    name: 'policy-file',
    repeatable: true,
    help: 'multi-document YAML with DatabasePolicy, MaskingRule and Secret documents',
  },
  { name: 'policy', help: 'NAMESPACE/NAME of the DatabasePolicy (optional when the files hold one)' },
  {
    name: 'as',
    repeatable: true,
    help: 'serviceaccount:NS/NAME, user:NAME, group:NAME or dbuser:NAME (repeatable)',
  },
  {
    name: 'upstream',
    help: 'postgres://user:password@host:port/db to read the catalog (needed for masking)',
  },
  { name: 'database', help: 'database name for the decision (default: from --upstream, else postgres)' },
  { name: 'search-path', help: 'comma-separated search_path when no --upstream (default pg_catalog,public)' },
  {
    name: 'lint',
    boolean: true,
    help: 'with --upstream, no SQL: check every MaskingRule against the database; exit 1 if a table or column is missing',
  },
  { name: 'help', boolean: true, help: 'show this help' },
];

export function identityFromSubjects(subjects: string[]): Identity {
  const id: Identity = { groups: [], databaseUser: '' };
  for (const s of subjects) {
    const m = /^(serviceaccount|user|group|dbuser):(.+)$/i.exec(s);
    if (!m)
      throw new UsageError(
        `--as ${JSON.stringify(s)}: expected serviceaccount:NS/NAME, user:NAME, group:NAME or dbuser:NAME`,
      );
    const [kind, value] = [m[1]!.toLowerCase(), m[2]!];
    if (kind === 'serviceaccount') {
      if (!/^[^/]+\/[^/]+$/.test(value))
        throw new UsageError(`--as ${s}: a service account is NAMESPACE/NAME`);
      id.serviceAccount = value;
    } else if (kind === 'user') id.user = value;
    else if (kind === 'group') id.groups.push(value);
    else id.databaseUser = value;
  }
  return id;
}

export async function run(argv: string[]): Promise<number> {
  const flags = parseFlags(argv, FLAGS);
  if (flags.has('help')) {
    process.stdout.write(
      `${helpText('check', 'Judge one SQL text as the proxy would and print the decision as JSON.', FLAGS)}\n`,
    );
    return 0;
  }
  const files = flags.all('policy-file');
  if (!files.length) throw new UsageError('--policy-file is required');
  const sql = flags.positionals.join(' ');
  const lint = flags.has('lint');
  if (lint && !flags.get('upstream')) throw new UsageError('--lint reads the database: give --upstream URL');
  if (lint && sql.trim())
    throw new UsageError('--lint checks the policy, not a statement: leave out the SQL');
  if (!lint && !sql.trim()) throw new UsageError('give the SQL to check as the last argument');
  const { loadPolicyFiles } = await import('../policy/load.js');
  const loaded = loadPolicyFiles(
    files.map((name) => {
      try {
        return { name, text: fs.readFileSync(name, 'utf8') };
      } catch (err) {
        throw unreadable('--policy-file', name, err);
      }
    }),
    flags.get('policy'),
  );
  if (!loaded.ok) {
    process.stderr.write(`dbguard check: invalid policy:\n  ${loaded.errors.join('\n  ')}\n`);
    return 1;
  }
  const policy = loaded.compiled;
  const engine = await import('../policy/engine.js');
  await engine.initParser();
  const identity = identityFromSubjects(flags.all('as'));
  let catalog: import('../policy/engine.js').CatalogSnapshot | undefined;
  let searchPath = (flags.get('search-path') ?? 'pg_catalog,public')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  let database = flags.get('database') ?? 'postgres';
  const upstream = flags.get('upstream');
  if (upstream) {
    const problem = postgresUrlProblem(upstream);
    if (problem) throw new UsageError(`--upstream: ${problem}`);
    const pg = (await import('pg')).default;
    // The password comes from the URL, else PGPASSWORD (pg reads it).
    const client = new pg.Client({ connectionString: upstream, connectionTimeoutMillis: 10_000 });
    client.on('error', () => {}); // a connection lost after connect() is reported by the query that fails
    try {
      await client.connect();
    } catch (err) {
      await client.end().catch(() => {});
      throw new CliError(explainConnectFailure(upstream, err));
    }
    try {
      const rows = async (text: string) =>
        (await client.query({ text, rowMode: 'array' })).rows.map((r: unknown[]) =>
          r.map((v) => (v === null ? null : String(v))),
        );
      catalog = engine.parseCatalog(await rows(engine.catalogQuery(policy)));
      searchPath = engine.parseSearchPath((await rows(engine.searchPathQuery))[0]?.[0] ?? '[]');
      database = flags.get('database') ?? client.database ?? database;
      if (!identity.databaseUser) identity.databaseUser = client.user ?? '';
    } catch (err) {
      throw new CliError(`reading the catalog from ${redactUrl(upstream)}: ${(err as Error).message}`);
    } finally {
      await client.end();
    }
  }
  if (lint) return printLint(policy, catalog!, database);
  const d = engine.judge(
    sql,
    { identity, database, searchPath, catalog, tempSchema: catalog?.tempSchema },
    policy,
  );
  const out = {
    policy: policy.policy,
    policyVersion: policy.version,
    decision: d.kind,
    rule: d.rule ?? null,
    message: d.message ?? null,
    sqlstate: d.sqlstate ?? null,
    enforced: d.enforced,
    maskedSubject: engine.isMaskedSubject(policy, identity),
    maskedColumns: d.maskedColumns,
    // an allow-list refusal: the (privilege, object) pairs no Allow rule permits
    ...(d.uncovered ? { uncovered: d.uncovered } : {}),
    statements: d.statements.map((s) => ({
      command: s.command,
      objects: s.objects,
      // what rules match: every (privilege, object) pair, with the view each is read through
      privileges: engine.flattenExercises(s.exercises ?? []),
      withoutWhere: s.withoutWhere,
      opaque: s.opaque,
      fingerprint: s.fingerprint,
      normalized: s.normalized,
    })),
    rewrittenSql: d.kind === 'deny' ? null : d.sql,
    ...(d.tags ? { tags: d.tags } : {}),
    ...(!catalog && engine.isMaskedSubject(policy, identity)
      ? { note: "masking needs the tables' column lists: pass --upstream to read them from the database" }
      : !catalog && d.statements.some((s) => engine.hasHiddenExercises(s.exercises ?? []))
        ? {
            note: 'without --upstream the relations read may be views over anything: rules naming objects treat them so',
          }
        : {}),
  };
  process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
  return 0;
}

/**
 * `--lint`: every masked table and column of the policy against the database's catalog. Problems go
 * to stderr one per line (with the nearest existing name) and to stdout as JSON; exit 1 if any.
 */
async function printLint(
  policy: import('../api/compiled.js').CompiledPolicy,
  catalog: import('../policy/engine.js').CatalogSnapshot,
  database: string,
): Promise<number> {
  const { maskingProblems } = await import('../policy/mask-coverage.js');
  const problems = maskingProblems(policy, catalog);
  const columns = policy.masking.reduce((n, m) => n + m.columns.length, 0);
  for (const p of problems) process.stderr.write(`dbguard check: ${p.message}\n`);
  process.stdout.write(
    `${JSON.stringify(
      { policy: policy.policy, policyVersion: policy.version, database, maskedColumns: columns, problems },
      null,
      2,
    )}\n`,
  );
  return problems.length ? 1 : 0;
}
