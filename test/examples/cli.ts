/**
 * Running documented `dbguard` commands as they are written: split like a POSIX shell would (quotes, no
 * expansion), run with the built CLI from the repository root, and point a documented `--upstream` at a test
 * database with the same schema instead of the example's host.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import { CLI, ROOT } from '../chart/paths.js';

/** Shell words of one command line: '...' and "..." quoting, backslash escapes outside single quotes. */
export function shellWords(line: string): string[] {
  const words: string[] = [];
  let cur = '';
  let inWord = false;
  let quote: '"' | "'" | undefined;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (quote) {
      if (c === quote) quote = undefined;
      else if (c === '\\' && quote === '"' && /["\\$`]/.test(line[i + 1] ?? '')) cur += line[++i];
      else cur += c;
    } else if (c === '"' || c === "'") {
      quote = c;
      inWord = true;
    } else if (c === '\\') {
      cur += line[++i] ?? '';
      inWord = true;
    } else if (/\s/.test(c)) {
      if (inWord) words.push(cur);
      cur = '';
      inWord = false;
    } else {
      cur += c;
      inWord = true;
    }
  }
  if (quote) throw new Error(`unterminated ${quote} in: ${line}`);
  if (inWord) words.push(cur);
  return words;
}

/** Replace the value of `--upstream` (documented as an example host) with a real database URL. */
export function withUpstream(args: string[], url: string | undefined): string[] {
  const i = args.indexOf('--upstream');
  if (i < 0 || url === undefined) return args;
  return [...args.slice(0, i + 1), url, ...args.slice(i + 2)];
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** `dbguard ARGS` (the first word must be `dbguard`), from the repository root. */
export function runDbguard(words: string[]): Promise<CliResult> {
  if (words[0] !== 'dbguard') throw new Error(`not a dbguard command: ${words.join(' ')}`);
  if (!fs.existsSync(CLI)) throw new Error('run `npm run build` first: the test drives the built CLI');
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, ...words.slice(1)],
      { cwd: ROOT, timeout: 120_000 },
      (err, stdout, stderr) =>
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}
