/**
 * Cost of judging: µs per judge() for typical statements (unmasked and masked subject, cold), and
 * through a DecisionCache (hit/miss counts), plus the time to load and compile a policy with many
 * rules. Pure CPU, no server: the catalog is a hand-made snapshot. Run:
 * `npm run build && node dist/bench/policy-bench.js [iterations]`; `bench/run.ts` calls
 * `measurePolicyCost` for its report.
 */
import { pathToFileURL } from 'node:url';
import { COMPILED_FORMAT, type CompiledPolicy } from '../api/compiled.js';
import { contextKey, DecisionCache } from '../policy/cache.js';
import { parseCatalog } from '../policy/catalog.js';
import { formatPolicyError, selectPolicy } from '../policy/compile.js';
import type { Identity } from '../policy/identity.js';
import { judge } from '../policy/judge.js';
import { parsePolicyDocuments } from '../policy/load.js';
import { initParser, parseText } from '../policy/parser.js';
import type { SessionContext } from '../policy/resolve.js';
import { manyRulesPolicy } from './policy.js';

const cols = [
  'id int4 N',
  'name text S',
  'email text S',
  'ssn text S',
  'salary numeric N',
  'birth_date date D',
];
const catalog = parseCatalog([
  ['path', 'pg_catalog', '1', null, null, null, null, null],
  ['path', 'public', '2', null, null, null, null, null],
  ['schema', 'public', null, null, null, null, null, null],
  ['rel', 'public', 'customers', 'r', null, null, null, null],
  ['rel', 'public', 'orders', 'r', null, null, null, null],
  ['root', 'public', 'customers', 'public', 'customers', null, null, null],
  ...cols.map((c, i) => {
    const [name, type, cat] = c.split(' ');
    return ['col', 'public', 'customers', name!, type!, String(i + 1), cat!, 'public.customers'];
  }),
  ['version', 'bench', null, null, null, null, null, null],
]);

const policy: CompiledPolicy = {
  format: COMPILED_FORMAT,
  policy: 'bench/p',
  version: 'sha256:bench',
  upstream: { host: 'x', port: 5432, sslmode: 'disable' },
  defaultAction: 'Allow',
  rules: [
    { name: 'no-drop', action: 'Deny', match: { commands: ['DROP *', 'TRUNCATE TABLE'] } },
    {
      name: 'bulk',
      action: 'RequireApproval',
      match: { commands: ['DELETE', 'UPDATE'], withoutWhere: true },
    },
  ],
  functionsAllow: [],
  audit: { statements: 'All' },
  enforcement: 'Enforce',
  masking: [
    {
      name: 'bench/pii',
      columns: [
        { schema: 'public', table: 'customers', column: 'email', strategy: 'Email' },
        { schema: 'public', table: 'customers', column: 'ssn', strategy: 'Redact' },
        { schema: 'public', table: 'customers', column: 'salary', strategy: 'Nullify' },
      ],
      exemptSubjects: [{ kind: 'Group', name: 'pii' }],
    },
  ],
};

const plain: Identity = { groups: ['pii'], databaseUser: 'app' };
const masked: Identity = { groups: [], databaseUser: 'app' };
const ctx = (identity: Identity): SessionContext => ({
  identity,
  database: 'app',
  searchPath: ['pg_catalog', 'public'],
  catalog,
});

const STATEMENTS: Record<string, string> = {
  'point select': 'SELECT id, total FROM orders WHERE id = $1',
  'join + masked table':
    'SELECT o.id, c.email FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.id = $1',
  'update returning': 'UPDATE customers SET name = $1 WHERE id = $2 RETURNING *',
  'multi-statement': 'BEGIN; INSERT INTO orders VALUES (1, 2); SELECT * FROM customers; COMMIT',
};

function time(fn: () => void, n: number): number {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) fn();
  return Number(process.hrtime.bigint() - t0) / 1000 / n;
}

export interface StatementCost {
  label: string;
  /** µs per call */
  parse: number;
  judge: number;
  judgeMasked: number;
  cached: number;
}

export interface PolicyCost {
  iterations: number;
  statements: StatementCost[];
  /** a workload of 50 texts repeated 20 times through one cache */
  workload: { usPerLookup: number; hits: number; misses: number };
  /** load + validate + compile `rules` rules (in `policies` DatabasePolicies), ms (median of `repeats`) */
  compile: { rules: number; policies: number; ms: number; repeats: number };
  /** judge() cost (cache miss) against the many-rules policy, masked subject, µs */
  judgeManyRules: number;
}

function medianOf(xs: number[]): number {
  const v = [...xs].sort((a, b) => a - b);
  const m = v.length >> 1;
  return v.length % 2 ? v[m]! : (v[m - 1]! + v[m]!) / 2;
}

export async function measurePolicyCost(iterations = 2000, manyRules = 1000): Promise<PolicyCost> {
  await initParser();
  // Cache lookups as a proxy session makes them: its context key made once per change of its facts.
  const session = ctx(masked);
  const sessionKey = contextKey(session, policy);
  const statements: StatementCost[] = [];
  for (const [label, sql] of Object.entries(STATEMENTS)) {
    const parse = time(() => parseText(sql), iterations);
    const j = time(() => judge(sql, ctx(plain), policy), iterations);
    const jm = time(() => judge(sql, ctx(masked), policy), iterations);
    const cache = new DecisionCache(1000);
    cache.judge(sql, session, policy, sessionKey);
    const cached = time(() => cache.judge(sql, session, policy, sessionKey), iterations);
    statements.push({ label, parse, judge: j, judgeMasked: jm, cached });
  }
  // cache behaviour over a workload with repeats: 50 distinct texts, 20 rounds
  const cache = new DecisionCache(10_000);
  const texts = Array.from({ length: 50 }, (_, i) => `SELECT * FROM customers WHERE id = ${i}`);
  const t = time(() => {
    for (const s of texts) cache.judge(s, session, policy, sessionKey);
  }, 20);

  // One DatabasePolicy holds at most 256 rules (the CRD schema's limit), so `manyRules` rules are
  // spread over policies of up to 250 rules in one file: parsed once, each policy compiled.
  const perPolicy = 250;
  const names: string[] = [];
  const docs: string[] = [];
  for (let i = 0; i * perPolicy < manyRules; i++) {
    names.push(`bench/big${i}`);
    docs.push(manyRulesPolicy(Math.min(perPolicy, manyRules - i * perPolicy), `big${i}`));
  }
  const text = docs.join('---\n');
  const repeats = 5;
  const compileMs: number[] = [];
  let compiled: CompiledPolicy[] = [];
  for (let i = 0; i < repeats; i++) {
    const t0 = performance.now();
    const parsed = parsePolicyDocuments([{ name: 'many-rules.yaml', text }]);
    if (!parsed.ok)
      throw new Error(`the many-rules policy file does not load: ${formatPolicyError(parsed.errors[0]!)}`);
    compiled = names.map((n) => {
      const res = selectPolicy(parsed.resources, n);
      if (!res.ok) throw new Error(`${n} does not compile: ${formatPolicyError(res.errors[0]!)}`);
      return res.compiled;
    });
    compileMs.push(performance.now() - t0);
  }
  // judge against all of them as one rule list: the statement matches none, so every rule is tried
  const bigPolicy: CompiledPolicy = {
    ...compiled[0]!,
    rules: compiled.flatMap((c) => c.rules),
    masking: policy.masking,
  };
  const judgeManyRules = time(
    () => judge(STATEMENTS['join + masked table']!, ctx(masked), bigPolicy),
    Math.max(10, iterations >> 2),
  );
  return {
    iterations,
    statements,
    workload: { usPerLookup: t / texts.length, hits: cache.hits, misses: cache.misses },
    compile: { rules: manyRules, policies: names.length, ms: medianOf(compileMs), repeats },
    judgeManyRules,
  };
}

async function main(): Promise<void> {
  const iterations = Math.max(10, Math.min(1_000_000, Number(process.argv[2] ?? 2000) || 2000));
  const r = await measurePolicyCost(iterations);
  console.log(`policy bench: ${iterations} iterations per row (µs per call)`);
  console.log(
    'statement'.padEnd(24),
    'parse'.padStart(8),
    'judge'.padStart(8),
    'judge(masked)'.padStart(14),
    'cached'.padStart(8),
  );
  for (const s of r.statements) {
    console.log(
      s.label.padEnd(24),
      s.parse.toFixed(1).padStart(8),
      s.judge.toFixed(1).padStart(8),
      s.judgeMasked.toFixed(1).padStart(14),
      s.cached.toFixed(2).padStart(8),
    );
  }
  console.log(
    `workload: 50 texts x 20 rounds: ${r.workload.usPerLookup.toFixed(2)} µs/lookup, hits ${r.workload.hits}, misses ${r.workload.misses}`,
  );
  console.log(
    `compile: ${r.compile.rules} rules (${r.compile.policies} policies) in ${r.compile.ms.toFixed(1)} ms (median of ${r.compile.repeats}); ` +
      `judge against them: ${r.judgeManyRules.toFixed(1)} µs`,
  );
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await main();
