/**
 * Flag parsing shared by every subcommand. Every flag `--some-flag` can also be given as the
 * environment variable `DBGUARD_SOME_FLAG` (contract §3); a flag on the command line wins.
 * Repeatable flags collect every occurrence; from the environment they are split on commas.
 */
export interface FlagSpec {
  /** flag name without dashes, e.g. `policy-file` */
  name: string;
  repeatable?: boolean;
  /** a flag that takes no value */
  boolean?: boolean;
  default?: string;
  /** one line for --help */
  help: string;
}

export interface ParsedFlags {
  values: Map<string, string[]>;
  positionals: string[];
  get(name: string): string | undefined;
  all(name: string): string[];
  has(name: string): boolean;
}

export class UsageError extends Error {}

export function envName(flag: string): string {
  return `DBGUARD_${flag.replace(/-/g, '_').toUpperCase()}`;
}

export function parseFlags(
  argv: string[],
  specs: FlagSpec[],
  env: NodeJS.ProcessEnv = process.env,
): ParsedFlags {
  const byName = new Map(specs.map((s) => [s.name, s]));
  const values = new Map<string, string[]>();
  const positionals: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (!arg.startsWith('--') && !(arg.startsWith('-') && arg.length === 2 && byName.has(arg.slice(1)))) {
      positionals.push(arg);
      continue;
    }
    let name = arg.startsWith('--') ? arg.slice(2) : arg.slice(1);
    let value: string | undefined;
    const eq = name.indexOf('=');
    if (eq >= 0) {
      value = name.slice(eq + 1);
      name = name.slice(0, eq);
    }
    const spec = byName.get(name);
    if (!spec) throw new UsageError(`unknown flag --${name}`);
    if (spec.boolean) {
      value = value ?? 'true';
    } else if (value === undefined) {
      value = argv[++i];
      if (value === undefined) throw new UsageError(`flag --${name} needs a value`);
    }
    const list = values.get(name) ?? [];
    if (!spec.repeatable && list.length > 0) throw new UsageError(`flag --${name} given more than once`);
    list.push(value);
    values.set(name, list);
  }
  for (const spec of specs) {
    if (values.has(spec.name)) continue;
    const fromEnv = env[envName(spec.name)];
    if (fromEnv !== undefined && fromEnv !== '') {
      values.set(
        spec.name,
        spec.repeatable
          ? fromEnv
              .split(',')
              .map((s) => s.trim())
              .filter(Boolean)
          : [fromEnv],
      );
    } else if (spec.default !== undefined) {
      values.set(spec.name, [spec.default]);
    }
  }
  return {
    values,
    positionals,
    get: (n) => values.get(n)?.[0],
    all: (n) => values.get(n) ?? [],
    has: (n) => values.has(n) && values.get(n)![0] !== 'false',
  };
}

export function helpText(command: string, summary: string, specs: FlagSpec[]): string {
  const lines = [`usage: dbguard ${command} [flags]`, '', summary, '', 'flags:'];
  for (const s of specs) {
    const def = s.default !== undefined ? ` (default ${s.default})` : '';
    lines.push(
      // A one-letter flag is written as it is typed: `-f VALUE`.
      `  ${s.name.length === 1 ? '-' : '--'}${s.name}${s.boolean ? '' : ' VALUE'}${s.repeatable ? ' (repeatable)' : ''}  ${s.help}${def}  [${envName(s.name)}]`,
    );
  }
  return lines.join('\n');
}
