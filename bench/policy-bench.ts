/**
 * Cost of judging: µs per judge() for typical statements (unmasked and masked subject, cold), and
 * through a DecisionCache (hit/miss counts). Pure CPU, no server: the catalog is a hand-made
 * snapshot. Run: `npm run build && node dist/bench/policy-bench.js [iterations]`.
 */
import { COMPILED_FORMAT, type CompiledPolicy } from '../api/compiled.js';
import { DecisionCache } from '../policy/cache.js';
import { parseCatalog } from '../policy/catalog.js';
import type { Identity } from '../policy/identity.js';
import { judge } from '../policy/judge.js';
import { initParser, parseText } from '../policy/parser.js';
import type { SessionContext } from '../policy/resolve.js';

const iterations = Math.max(10, Math.min(1_000_000, Number(process.argv[2] ?? 2000) || 2000));

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

await initParser();
console.log(`policy bench: ${iterations} iterations per row (µs per call)`);
console.log(
  'statement'.padEnd(24),
  'parse'.padStart(8),
  'judge'.padStart(8),
  'judge(masked)'.padStart(14),
  'cached'.padStart(8),
);
for (const [label, sql] of Object.entries(STATEMENTS)) {
  const parse = time(() => parseText(sql), iterations);
  const j = time(() => judge(sql, ctx(plain), policy), iterations);
  const jm = time(() => judge(sql, ctx(masked), policy), iterations);
  const cache = new DecisionCache(1000);
  cache.judge(sql, ctx(masked), policy);
  const cached = time(() => cache.judge(sql, ctx(masked), policy), iterations);
  console.log(
    label.padEnd(24),
    parse.toFixed(1).padStart(8),
    j.toFixed(1).padStart(8),
    jm.toFixed(1).padStart(14),
    cached.toFixed(2).padStart(8),
  );
}

// cache behaviour over a workload with repeats: 50 distinct texts, 20 subjects' worth of lookups
const cache = new DecisionCache(10_000);
const texts = Array.from({ length: 50 }, (_, i) => `SELECT * FROM customers WHERE id = ${i}`);
const t = time(() => {
  for (const s of texts) cache.judge(s, ctx(masked), policy);
}, 20);
console.log(
  `workload: 50 texts x 20 rounds: ${(t / texts.length).toFixed(2)} µs/lookup, hits ${cache.hits}, misses ${cache.misses}`,
);
