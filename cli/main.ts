#!/usr/bin/env node
/**
 * `dbguard`: one binary, one subcommand per component (contract §3). Each subcommand lives in its
 * own module and is loaded only when asked for, so `dbguard crds` does not load the proxy.
 */
import { setFlagsFromString } from 'node:v8';
import { CliError } from './errors.js';
import { UsageError } from './flags.js';

// The SQL parser is PostgreSQL's own, compiled to WebAssembly. By default V8 recompiles its hot
// functions with TurboFan in the background; for this module (the grammar is one huge function) that
// holds about 80 MiB of memory for good, in every sidecar, to make a decision-cache miss 10-40%
// faster. Baseline (Liftoff) code only: set before the module is compiled, i.e. before any command
// loads. DBGUARD_PARSER_OPTIMIZE=true keeps V8's default. See docs/benchmarks.md (memory).
if (process.env.DBGUARD_PARSER_OPTIMIZE !== 'true') setFlagsFromString('--liftoff-only');

type Command = { summary: string; load: () => Promise<{ run(argv: string[]): Promise<number> }> };

const commands: Record<string, Command> = {
  proxy: {
    summary: 'run the PostgreSQL protocol proxy in front of one upstream',
    load: () => import('./proxy.js'),
  },
  demo: {
    summary: 'an embedded database with sample data, a sample policy and a proxy in front',
    load: () => import('./demo.js'),
  },
  operator: {
    summary: 'watch DatabasePolicy and MaskingRule resources, compile and serve policies',
    load: () => import('./operator.js'),
  },
  check: {
    summary: 'judge one SQL text as the proxy would; prints decision, rule and rewritten SQL as JSON',
    load: () => import('./check.js'),
  },
  inject: {
    summary: 'print manifests with the sidecar injected into every labelled pod template',
    load: () => import('./inject.js'),
  },
  db: {
    summary:
      "a DBA's one-time set-up in a database: 'dbguard db install' adds the Hash strategy's keyed function",
    load: () => import('./db.js'),
  },
  crds: { summary: 'print the CustomResourceDefinitions', load: () => import('./crds.js') },
  audit: {
    summary: "work with audit logs: 'dbguard audit verify FILE' checks the hash chain",
    load: () => import('./audit.js'),
  },
};

function usage(): string {
  const width = Math.max(...Object.keys(commands).map((c) => c.length));
  return [
    'usage: dbguard <command> [flags]',
    '',
    'commands:',
    ...Object.entries(commands).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`),
    '',
    "Run 'dbguard <command> --help' for a command's flags. Every flag also reads DBGUARD_<FLAG>.",
  ].join('\n');
}

/** The subcommand running, for error messages. */
let commandName = '';

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  commandName = name ?? '';
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    // Asked for: standard output, exit 0; no command at all is a mistake: standard error, exit 2.
    (name ? process.stdout : process.stderr).write(`${usage()}\n`);
    return name ? 0 : 2;
  }
  const command = commands[name];
  if (!command) {
    process.stderr.write(`dbguard: unknown command '${name}'\n\n${usage()}\n`);
    return 2;
  }
  const mod = await command.load();
  return mod.run(rest);
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code !== 0) process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof UsageError) {
      process.stderr.write(`dbguard: ${err.message}\n`);
      process.exitCode = 2;
      return;
    }
    const who = commandName in commands ? `dbguard ${commandName}` : 'dbguard';
    if (err instanceof CliError) {
      process.stderr.write(`${who}: ${err.message}\n`);
      process.exitCode = 1;
      return;
    }
    // Not foreseen: still one line for the user; the stack only when asked for (a bug report).
    const message = err instanceof Error ? err.message : String(err);
    const stack = process.env.DBGUARD_DEBUG && err instanceof Error ? `\n${err.stack}` : '';
    process.stderr.write(
      `${who}: ${message.split('\n')[0]}${stack || ' (DBGUARD_DEBUG=1 shows where it happened)'}\n`,
    );
    process.exitCode = 1;
  },
);
