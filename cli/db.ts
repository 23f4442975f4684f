/**
 * `dbguard db install|status|uninstall`: the optional, DBA-run part of dbguard inside a database.
 * Today that is the Hash strategy's keyed function (policy/hash-key.ts, cli/hash-key-store.ts): the
 * rewrite calls `dbguard.hash(value, key id)`, so the key never appears in SQL text, and Hash is refused
 * in a database without it.
 *
 *   dbguard db install --upstream URL [--key-id ID (--key-file F | --key-from-env)]
 *                      [--policy-file F... [--policy NS/NAME]] [--grant ROLE...]
 *   dbguard db status  --upstream URL [--policy-file F... [--policy NS/NAME]]
 *   dbguard db uninstall --upstream URL
 */
import fs from 'node:fs';
import type pg from 'pg';
import { HASH_SCHEMA, hashKeyIds } from '../policy/hash-key.js';
import { type FlagSpec, helpText, parseFlags, UsageError } from './flags.js';
import {
  installSql,
  KEY_ID_PATTERN,
  keyCopySql,
  keyCopyText,
  keyIdsSql,
  keyLoadTableSql,
  mergeKeysSql,
  preflightSql,
  statusSql,
  uninstallSql,
} from './hash-key-store.js';

/** Advisory lock key serializing concurrent installs in one database ('dbguard' in ASCII). */
const INSTALL_LOCK = 0x646267756172640n;

/** The environment variable `--key-from-env` reads the key from. */
export const KEY_ENV = 'DBGUARD_HASH_KEY';

const FLAGS: FlagSpec[] = [
  { name: 'upstream', help: 'postgres://user:password@host:port/db of the target database (a DBA role)' },
  {
    name: 'key-id',
    help: 'key id NAMESPACE/SECRET/KEY: the saltSecretRef of the Hash columns, in their namespace',
  },
  { name: 'key-file', help: 'file holding the key (its exact bytes: the Secret key value)' },
  { name: 'key-from-env', boolean: true, help: `read the key from the environment variable ${KEY_ENV}` },
  {
    name: 'policy-file',
    repeatable: true,
    help: 'policy files: install the key of every Hash column of the policy from its Secret documents',
  },
  { name: 'policy', help: 'NAMESPACE/NAME of the DatabasePolicy (optional when the files hold one)' },
  {
    name: 'grant',
    repeatable: true,
    help: 'roles that may execute dbguard.hash: the roles proxies log in as (default PUBLIC)',
  },
  { name: 'help', boolean: true, help: 'show this help' },
];

const SUMMARY = `Install (status, uninstall) the Hash strategy's keyed function dbguard.hash in a database.
  dbguard db install   --upstream URL [--key-id ID (--key-file F | --key-from-env)] [--policy-file F [--policy NS/NAME]] [--grant ROLE]
  dbguard db status    --upstream URL [--policy-file F [--policy NS/NAME]]
  dbguard db uninstall --upstream URL`;

/** One COPY ... FROM STDIN with `data` over node-postgres, which has no COPY support of its own. */
class CopyIn {
  private done!: (err?: Error) => void;
  readonly finished = new Promise<void>((resolve, reject) => {
    this.done = (err) => (err ? reject(err) : resolve());
  });
  private error?: Error;

  constructor(
    readonly text: string,
    private readonly data: string,
  ) {}

  submit(connection: any): void {
    connection.query(this.text);
  }
  handleCopyInResponse(connection: any): void {
    connection.sendCopyFromChunk(Buffer.from(this.data, 'utf8'));
    connection.endCopyFrom();
  }
  handleCommandComplete(): void {}
  handleRowDescription(): void {}
  handleDataRow(): void {}
  handleEmptyQuery(): void {}
  handlePortalSuspended(): void {}
  handleError(err: Error): void {
    this.error = err;
  }
  handleReadyForQuery(): void {
    this.done(this.error);
  }
}

async function copyIn(client: pg.Client, text: string, data: string): Promise<void> {
  const q = new CopyIn(text, data);
  client.query(q as unknown as pg.Submittable);
  await q.finished;
}

interface KeyToInstall {
  id: string;
  key: Buffer;
  from: string;
}

/** The keys named on the command line and, with --policy-file, those of the policy's Hash columns. */
async function keysFromFlags(flags: ReturnType<typeof parseFlags>): Promise<KeyToInstall[]> {
  const keys: KeyToInstall[] = [];
  const policyKeys = flags.all('policy-file').length ? await policyHashKeys(flags) : undefined;
  const file = flags.get('key-file');
  const fromEnv = flags.has('key-from-env');
  if (file && fromEnv) throw new UsageError('give --key-file or --key-from-env, not both');
  if (file || fromEnv) {
    let id = flags.get('key-id');
    if (!id && policyKeys?.length === 1) id = policyKeys[0]!.id;
    if (!id) throw new UsageError('--key-id NAMESPACE/SECRET/KEY is required with --key-file/--key-from-env');
    let key: Buffer;
    if (file) {
      try {
        key = fs.readFileSync(file);
      } catch (e) {
        throw new UsageError(`--key-file ${file}: ${(e as Error).message}`);
      }
    } else {
      const v = process.env[KEY_ENV];
      if (v === undefined) throw new UsageError(`--key-from-env: ${KEY_ENV} is not set`);
      key = Buffer.from(v, 'utf8');
    }
    keys.push({ id, key, from: file ? `--key-file ${file}` : KEY_ENV });
  } else if (flags.get('key-id')) {
    throw new UsageError('--key-id needs --key-file or --key-from-env');
  } else if (policyKeys) {
    for (const k of policyKeys) {
      if (k.key === undefined)
        throw new UsageError(
          `key ${k.id}: no Secret document with it in the policy files; pass it with --key-id ${k.id} --key-file F`,
        );
      keys.push({ id: k.id, key: k.key, from: 'its Secret in the policy files' });
    }
  }
  for (const k of keys) {
    if (!KEY_ID_PATTERN.test(k.id)) throw new UsageError(`--key-id ${k.id}: expected NAMESPACE/SECRET/KEY`);
    if (k.key.length === 0) throw new UsageError(`key ${k.id} is empty`);
  }
  return keys;
}

/** Every Hash key id the policy uses, with its value where a Secret document in the files holds it. */
async function policyHashKeys(flags: ReturnType<typeof parseFlags>): Promise<{ id: string; key?: Buffer }[]> {
  const { loadPolicyFiles, parsePolicyDocuments } = await import('../policy/load.js');
  const { secretLookup } = await import('../policy/compile.js');
  const files = flags.all('policy-file').map((name) => ({ name, text: fs.readFileSync(name, 'utf8') }));
  const loaded = loadPolicyFiles(files, flags.get('policy'));
  if (!loaded.ok) throw new UsageError(`invalid policy:\n  ${loaded.errors.join('\n  ')}`);
  const docs = parsePolicyDocuments(files);
  const secrets = docs.ok ? docs.resources.filter((r) => r.kind === 'Secret') : [];
  return hashKeyIds(loaded.compiled).map((id) => {
    const [ns, name, key] = id.split('/') as [string, string, string];
    const value = secretLookup(secrets as never, ns)(name, key);
    return { id, ...(value === undefined ? {} : { key: Buffer.from(value, 'utf8') }) };
  });
}

async function connect(flags: ReturnType<typeof parseFlags>): Promise<pg.Client> {
  const url = flags.get('upstream');
  if (!url) throw new UsageError('--upstream postgres://user:password@host:port/db is required');
  const pg = (await import('pg')).default;
  const client = new pg.Client({ connectionString: url, application_name: 'dbguard db' });
  await client.connect();
  return client;
}

const say = (line: string) => process.stdout.write(`${line}\n`);

/** What `installHashFunction` did. */
export interface InstallReport {
  created: boolean;
  keys: { id: string; action: string }[];
}

/**
 * Install (idempotently) the keyed function and the given keys, in one transaction on `client` (a
 * role that owns the schema dbguard or may create it). Shared by the command, the demo and tests.
 */
export async function installHashFunction(
  client: pg.Client,
  keys: { id: string; key: Buffer }[],
  grants: string[] = [],
): Promise<InstallReport> {
  const pre = (await client.query(preflightSql)).rows as { object: string; owner: string; mine: boolean }[];
  const existing = pre.length > 0;
  const foreign = pre.filter((r) => !r.mine);
  if (foreign.length) {
    throw new Error(
      `${foreign.map((r) => `${r.object} belongs to ${r.owner}`).join(', ')}, not to ${client.user}: ` +
        `install as that role, or look at what the schema ${HASH_SCHEMA} holds and drop it first`,
    );
  }
  const copyText = keyCopyText(keys); // validates the ids before anything runs
  await client.query('BEGIN');
  try {
    // two installs at once (two DBAs, parallel set-ups) would race on CREATE ... IF NOT EXISTS
    await client.query(`SELECT pg_catalog.pg_advisory_xact_lock(${INSTALL_LOCK})`);
    await client.query(installSql(grants));
    const actions: { id: string; action: string }[] = [];
    if (keys.length) {
      await client.query(keyLoadTableSql);
      await copyIn(client, keyCopySql, copyText);
      actions.push(...(await client.query(mergeKeysSql)).rows);
    }
    await client.query('COMMIT');
    return { created: !existing, keys: actions };
  } catch (e) {
    await client.query('ROLLBACK').catch(() => {});
    throw e;
  }
}

async function install(flags: ReturnType<typeof parseFlags>): Promise<number> {
  const keys = await keysFromFlags(flags);
  const client = await connect(flags);
  try {
    const grants = flags.all('grant');
    const r = await installHashFunction(client, keys, grants);
    say(
      `${r.created ? 'created' : 'updated'} schema ${HASH_SCHEMA} in database ${client.database} (owner ${client.user})`,
    );
    say(`  table ${HASH_SCHEMA}.hash_keys: readable by its owner only`);
    say(
      `  function ${HASH_SCHEMA}.hash(value text, key_id text): SECURITY DEFINER, HMAC-SHA256, executable by ${(grants.length ? grants : ['PUBLIC']).join(', ')}`,
    );
    for (const a of r.keys) say(`  key ${a.id}: ${a.action} (from ${keys.find((k) => k.id === a.id)?.from})`);
    if (!keys.length) say('  no key given: add one with --key-id ID --key-file F, or --policy-file');
    return 0;
  } finally {
    await client.end();
  }
}

async function status(flags: ReturnType<typeof parseFlags>): Promise<number> {
  const wanted = flags.all('policy-file').length ? (await policyHashKeys(flags)).map((k) => k.id) : [];
  const client = await connect(flags);
  try {
    const s = (await client.query(statusSql)).rows[0];
    const { hashFunctionCatalogRows, hashFunctionStatus } = await import('../policy/hash-key.js');
    const verdict = (await client.query({ text: hashFunctionCatalogRows, rowMode: 'array' })).rows[0]?.[1];
    const usable = hashFunctionStatus(verdict === undefined ? undefined : String(verdict));
    say(`database ${s.database}:`);
    say(`  schema ${HASH_SCHEMA}: ${s.schema ? 'present' : 'absent'}`);
    say(`  function ${HASH_SCHEMA}.hash: ${s.function ? `installed (owner ${s.owner})` : 'not installed'}`);
    say(`  usable by proxies logging in as ${s.login}: ${usable.usable ? 'yes' : `no (${usable.why})`}`);
    let installed: string[] | undefined;
    if (s.key_ids) {
      try {
        installed = (await client.query(keyIdsSql)).rows.map((r: { id: string }) => r.id);
        say(`  keys: ${installed.length ? installed.join(', ') : 'none'}`);
      } catch (e) {
        say(`  keys: cannot list (${(e as Error).message})`);
      }
    }
    const missing = wanted.filter((id) => !installed?.includes(id));
    for (const id of wanted) say(`  policy key ${id}: ${missing.includes(id) ? 'MISSING' : 'installed'}`);
    return s.function && usable.usable && missing.length === 0 ? 0 : 1;
  } finally {
    await client.end();
  }
}

async function uninstall(flags: ReturnType<typeof parseFlags>): Promise<number> {
  const client = await connect(flags);
  try {
    await client.query('BEGIN');
    await client.query(uninstallSql);
    await client.query('COMMIT');
    say(`removed dbguard.hash, its key table and the schema ${HASH_SCHEMA} from database ${client.database}`);
    say('  masked subjects now get a refusal for every statement that needs a Hash mask');
    return 0;
  } catch (e) {
    await client.query('ROLLBACK').catch(() => {});
    throw e;
  } finally {
    await client.end();
  }
}

export async function run(argv: string[]): Promise<number> {
  try {
    return await runDb(argv);
  } catch (e) {
    if (e instanceof UsageError) throw e;
    // a database error (connection, privileges): its message is the whole story, not a stack
    process.stderr.write(`dbguard db: ${(e as Error).message}\n`);
    return 1;
  }
}

async function runDb(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  const flags = parseFlags(rest, FLAGS);
  if (!sub || sub === '--help' || sub === '-h' || flags.has('help')) {
    process.stdout.write(`${helpText('db install|status|uninstall', SUMMARY, FLAGS)}\n`);
    return sub ? 0 : 2;
  }
  if (flags.positionals.length) throw new UsageError(`unexpected argument ${flags.positionals[0]}`);
  switch (sub) {
    case 'install':
      return install(flags);
    case 'status':
      return status(flags);
    case 'uninstall':
      return uninstall(flags);
    default:
      throw new UsageError(`db: unknown subcommand '${sub}' (install, status, uninstall)`);
  }
}
