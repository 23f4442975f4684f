/** Tiny `--name value` / `--flag` parser for the reliability commands (no dependency). */
export function parseArgs(argv: string[], known: Record<string, string>): Map<string, string> {
  const out = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--help' || a === '-h') {
      for (const [k, v] of Object.entries(known)) process.stdout.write(`  --${k.padEnd(18)} ${v}\n`);
      process.exit(0);
    }
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(a);
    if (!m || !(m[1]! in known)) throw new Error(`unknown argument ${a} (try --help)`);
    const value = m[2] ?? (argv[i + 1] && !argv[i + 1]!.startsWith('--') ? argv[++i]! : 'true');
    out.set(m[1]!, value);
  }
  return out;
}

/** `30s`, `5m`, `1h` or milliseconds. */
export function parseDuration(s: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(s.trim());
  if (!m) throw new Error(`invalid duration '${s}' (examples: 30s, 5m, 1h)`);
  const n = Number(m[1]);
  const unit = m[2] ?? 'ms';
  return Math.round(n * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[unit]!);
}
