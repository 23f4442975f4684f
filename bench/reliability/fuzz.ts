/**
 * `npm run fuzz` (node dist/bench/reliability/fuzz.js): the properties of test/reliability/fuzz.test.ts
 * with fresh seeds, round after round, until the time is up. The live-proxy properties run against a
 * PostgreSQL cluster started for the run. Prints each round; on a failure, the shrunk counterexample
 * and the seed to replay it (`--seed N`), exit code 1.
 */
import fc from 'fast-check';
import pg from 'pg';
import {
  catalogQuery,
  initParser,
  parseCatalog,
  parseSearchPath,
  searchPathQuery,
} from '../../policy/engine.js';
import { adminQuery } from '../../test/support/admin.js';
import { type RunningCluster, startCluster } from '../../test/support/pg-cluster.js';
import { RawConn } from '../../test/support/wire.js';
import { parseArgs, parseDuration } from './args.js';
import {
  propDecodersFailCleanly,
  propFramerReassembles,
  propJudgeDefined,
  propProxySurvives,
} from './fuzz-props.js';
import {
  differentialPolicyYaml,
  differentialSchemaSql,
  propLexerDifferential,
} from './lexer-differential.js';
import {
  compilePolicy,
  memoryLogger,
  reliabilityPolicyYaml,
  reliabilitySchemaSql,
  startGovernedProxy,
} from './support.js';

async function main() {
  const args = parseArgs(process.argv.slice(2), {
    duration: 'total time: 30s, 10m, 1h (default 5m)',
    seed: 'replay one seed (one round)',
    'no-proxy': 'pure properties only (no PostgreSQL needed)',
  });
  const durationMs = parseDuration(args.get('duration') ?? '5m');
  const fixedSeed = args.has('seed') ? Number(args.get('seed')) : undefined;
  const say = (l: string) => process.stderr.write(`${new Date().toISOString()} ${l}\n`);
  await initParser();
  const schema = `fuzz_${process.pid}`;
  let cluster: RunningCluster | undefined;
  let close = async () => {};
  const props: { name: string; runs: number; prop: () => fc.IRawProperty<unknown[], boolean> }[] = [
    { name: 'framer reassembles', runs: 500, prop: () => propFramerReassembles as never },
    { name: 'decoders fail cleanly', runs: 2000, prop: () => propDecodersFailCleanly as never },
  ];
  const policyFor = (port: number) => compilePolicy(reliabilityPolicyYaml({ schema, upstreamPort: port }));
  if (!args.has('no-proxy')) {
    say('starting a PostgreSQL cluster');
    cluster = await startCluster();
    await adminQuery(cluster, reliabilitySchemaSql(schema, 50));
    const policy = policyFor(cluster.port);
    const app = new pg.Client({
      host: cluster.host,
      port: cluster.port,
      user: 'app',
      password: 'app',
      database: 'app',
    });
    await app.connect();
    const catalog = parseCatalog((await app.query({ text: catalogQuery(policy), rowMode: 'array' })).rows);
    const searchPath = parseSearchPath(
      (await app.query({ text: searchPathQuery, rowMode: 'array' })).rows[0][0],
    );
    await app.end();
    const log = memoryLogger();
    const gp = await startGovernedProxy({
      policy,
      upstream: { host: cluster.host, port: cluster.port, sslmode: 'disable' },
      logger: log,
    });
    // The lexer differential (issue 17): its own schema and a policy that lets every readable text through.
    const lexSchema = `lexfz_${process.pid}`;
    await adminQuery(cluster, differentialSchemaSql(lexSchema));
    const lexPolicy = compilePolicy(differentialPolicyYaml(cluster.port));
    const lexGp = await startGovernedProxy({
      policy: lexPolicy,
      upstream: { host: cluster.host, port: cluster.port, sslmode: 'disable' },
      logger: log,
    });
    const lexConnect = async () =>
      (await RawConn.login({ host: lexGp.proxy.host, port: lexGp.proxy.port })).conn;
    const oids = await adminQuery(
      cluster,
      `SELECT n.nspname || '.' || c.relname AS name, c.oid::int AS oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = '${lexSchema}'`,
    );
    const lexEnv = {
      conn: await lexConnect(),
      reconnect: lexConnect,
      policy: lexPolicy,
      oids: new Map(oids.rows.map((r) => [r.name as string, Number(r.oid)])),
      database: 'app',
      user: 'trustuser',
    };
    close = async () => {
      lexEnv.conn.close();
      await lexGp.close();
      await gp.close();
      const errors = log.lines.filter((l) => l.level === 'error');
      if (errors.length) throw new Error(`proxy logged errors: ${JSON.stringify(errors.slice(0, 3))}`);
    };
    const ctx = { identity: { groups: [], databaseUser: 'app' }, database: 'app', searchPath, catalog };
    props.push(
      {
        name: 'judge: defined decision (masked, catalog)',
        runs: 2000,
        prop: () => propJudgeDefined(schema, policy, ctx) as never,
      },
      {
        name: 'judge: defined decision (no catalog)',
        runs: 1000,
        prop: () => propJudgeDefined(schema, policy, { ...ctx, catalog: undefined, searchPath: [] }) as never,
      },
      {
        name: 'live proxy: any message order',
        runs: 100,
        prop: () => propProxySurvives(gp.proxy.port, undefined, { timeoutMs: 5000 }) as never,
      },
      {
        name: 'live proxy: lexer differential (every setting combination)',
        runs: 300,
        prop: () => propLexerDifferential(lexEnv, lexSchema) as never,
      },
    );
  } else {
    const policy = policyFor(5432);
    props.push({
      name: 'judge: defined decision (no catalog)',
      runs: 2000,
      prop: () =>
        propJudgeDefined(schema, policy, {
          identity: { groups: [], databaseUser: 'app' },
          database: 'app',
          searchPath: [],
        }) as never,
    });
  }
  const totals = new Map<string, number>();
  const t0 = Date.now();
  let round = 0;
  let failed = false;
  try {
    while (!failed && (round === 0 || (fixedSeed === undefined && Date.now() - t0 < durationMs))) {
      round++;
      for (const p of props) {
        const seed = fixedSeed ?? (Date.now() ^ (round * 7919)) >>> 0;
        const started = Date.now();
        const r = await fc.check(p.prop(), { numRuns: p.runs, seed });
        totals.set(p.name, (totals.get(p.name) ?? 0) + r.numRuns);
        if (r.failed) {
          failed = true;
          say(`FAIL ${p.name} seed=${seed}: ${String(r.errorInstance ?? '')}`);
          say(`counterexample: ${fc.stringify(r.counterexample)}`);
          break;
        }
        say(`round ${round} ${p.name}: ${r.numRuns} runs in ${Date.now() - started} ms (seed ${seed})`);
      }
    }
  } finally {
    await close();
    await cluster?.stop();
  }
  const summary = {
    ok: !failed,
    rounds: round,
    durationMs: Date.now() - t0,
    runs: Object.fromEntries(totals),
  };
  process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
  process.exitCode = failed ? 1 : 0;
}

main().catch((err) => {
  process.stderr.write(`fuzz: ${(err as Error).message}\n`);
  process.exit(2);
});
