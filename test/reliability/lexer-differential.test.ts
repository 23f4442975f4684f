/**
 * The differential lexer fuzz (issue 17 item 2), a fixed time budget in `make test`: generated
 * statements under every combination of standard_conforming_strings, client_encoding (UTF8, LATIN1,
 * EUC_JP, SJIS) and timing (settled, or pipelined behind the change) through a live governed proxy;
 * the proxy's reading must be the server's, or the proxy refused the text. See
 * bench/reliability/lexer-differential.ts. Every failing input is appended to
 * lexer-regressions.json and replayed first on every run; the seed is in the failure message
 * (replay with DBGUARD_FUZZ_SEED=N). DBGUARD_LEXER_FUZZ_MS sets the budget (default 12 s).
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import {
  type DifferentialEnv,
  DifferentialMismatch,
  differentialPolicyYaml,
  differentialSchemaSql,
  type Piece,
  propLexerDifferential,
  runAllCombos,
} from '../../bench/reliability/lexer-differential.js';
import {
  compilePolicy,
  type GovernedProxy,
  memoryLogger,
  startGovernedProxy,
} from '../../bench/reliability/support.js';
import { initParser } from '../../policy/engine.js';
import { adminQuery } from '../support/admin.js';
import { RawConn } from '../support/wire.js';

const SCHEMA = 'lexfz';
const REGRESSIONS = path.join(path.dirname(fileURLToPath(import.meta.url)), 'lexer-regressions.json');
const BUDGET_MS = Number(process.env.DBGUARD_LEXER_FUZZ_MS ?? 12_000);

const server = inject('pg');
let gp: GovernedProxy;
let env: DifferentialEnv;
const log = memoryLogger();

async function connect(): Promise<RawConn> {
  const { conn, messages } = await RawConn.login({ host: gp.proxy.host, port: gp.proxy.port });
  if (messages.some((m) => m.type === 'E')) throw new Error('login through the proxy failed');
  return conn;
}

beforeAll(async () => {
  await initParser();
  await adminQuery(server, differentialSchemaSql(SCHEMA));
  const policy = compilePolicy(differentialPolicyYaml(server.port));
  gp = await startGovernedProxy({
    policy,
    upstream: { host: server.host, port: server.port, sslmode: 'disable' },
    logger: log,
  });
  const oids = await adminQuery(
    server,
    `SELECT n.nspname || '.' || c.relname AS name, c.oid::int AS oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = '${SCHEMA}'`,
  );
  env = {
    conn: await connect(),
    reconnect: connect,
    policy,
    oids: new Map(oids.rows.map((r) => [r.name as string, Number(r.oid)])),
    database: 'app',
    user: 'trustuser',
  };
});

afterAll(async () => {
  env?.conn.close();
  await gp?.close();
  await adminQuery(server, `DROP SCHEMA IF EXISTS ${SCHEMA} CASCADE`);
});

interface Regression {
  note: string;
  pieces: Piece[];
}

describe('the proxy reads every statement as the server does, or refuses it', () => {
  const regressions = JSON.parse(fs.readFileSync(REGRESSIONS, 'utf8')) as Regression[];

  it.each(regressions.map((r) => [r.note, r.pieces] as const))('regression: %s', async (_note, pieces) => {
    await runAllCombos(env, pieces);
  });

  it(`generated statements for ${BUDGET_MS} ms, every combination of the settings`, async () => {
    const seed = Number(process.env.DBGUARD_FUZZ_SEED ?? Date.now() % 2 ** 31);
    const tally = new Map<string, number>();
    const result = await fc.check(propLexerDifferential(env, SCHEMA, tally), {
      seed,
      numRuns: 1_000_000,
      interruptAfterTimeLimit: BUDGET_MS,
      markInterruptAsFailure: false,
    });
    if (result.failed) {
      const pieces = (result.counterexample as [Piece[]] | null)?.[0];
      const mismatch = result.errorInstance instanceof DifferentialMismatch;
      if (pieces && mismatch) {
        // Kept as a regression case: replayed first by every later run.
        const kept = JSON.parse(fs.readFileSync(REGRESSIONS, 'utf8')) as Regression[];
        kept.push({ note: `found by the fuzzer, seed ${seed}`, pieces });
        fs.writeFileSync(REGRESSIONS, `${JSON.stringify(kept, null, 2)}\n`);
      }
      throw new Error(
        `lexer differential failed (seed ${seed}, path ${result.counterexamplePath}; replay with DBGUARD_FUZZ_SEED=${seed}; ` +
          `${mismatch ? `the input was added to ${path.basename(REGRESSIONS)}` : 'a harness failure, not kept'}):\n${String((result.errorInstance as Error)?.message ?? result.errorInstance)}`,
      );
    }
    if (process.env.DBGUARD_FUZZ_VERBOSE) console.log(seed, result.numRuns, Object.fromEntries(tally));
    // The run did something: texts ran in both timings, and texts were refused.
    const count = (re: RegExp) => [...tally].filter(([k]) => re.test(k)).reduce((a, [, n]) => a + n, 0);
    expect(result.numRuns, `seed ${seed}`).toBeGreaterThan(5);
    expect(count(/^settled\/on\/ran$/), `seed ${seed}`).toBeGreaterThan(0);
    expect(count(/^pipelined\/.*\/ran$/), `seed ${seed}`).toBeGreaterThan(0);
    expect(count(/refused$/), `seed ${seed}`).toBeGreaterThan(0);
    expect(
      log.lines.filter((l) => l.level === 'error'),
      `seed ${seed}`,
    ).toEqual([]);
  });
});
