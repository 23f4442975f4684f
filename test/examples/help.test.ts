/**
 * Help and docs cannot drift silently: every command's `--help` runs and lists its flags in the form
 * they are typed, and every `dbguard <command> ...` or `kubectl dbguard ...` line in README.md and
 * docs/ uses only flags that command's `--help` lists, each split like a shell would.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { CLI, DOCS, ROOT } from '../chart/paths.js';
import { shellWords } from './cli.js';

const COMMANDS = ['proxy', 'demo', 'operator', 'check', 'inject', 'crds', 'audit', 'db'];
const PLUGIN = path.join(ROOT, 'dist/cli/kubectl-dbguard.js');

function help(script: string, args: string[]): string {
  return execFileSync(process.execPath, [script, ...args], { encoding: 'utf8', timeout: 20_000 });
}

/** Flags a help text lists: `--name` and `-x` where they start a flag entry. */
function flagsIn(text: string): Set<string> {
  const out = new Set<string>();
  for (const m of text.matchAll(/(?:^|[\s,[])(--?[a-z][a-z0-9-]*)(?=[\s,=\]]|$)/gm)) out.add(m[1]!);
  return out;
}

function markdownFiles(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? markdownFiles(p) : e.name.endsWith('.md') ? [p] : [];
  });
}

/** Command lines in fenced code blocks: `dbguard CMD ...` / `npx dbguard CMD ...` / `kubectl dbguard ...`. */
function documentedLines(): { file: string; words: string[] }[] {
  const out: { file: string; words: string[] }[] = [];
  for (const file of [path.join(ROOT, 'README.md'), ...markdownFiles(DOCS)]) {
    const md = fs.readFileSync(file, 'utf8');
    for (const block of md.matchAll(/^```[^\n]*\n([\s\S]*?)^```$/gm)) {
      for (const raw of block[1]!.replace(/\\\n\s*/g, ' ').split('\n')) {
        const line = raw.replace(/^\s*\$\s+/, '').trim();
        if (!/^(npx )?dbguard [a-z]/.test(line) && !/^kubectl dbguard /.test(line)) continue;
        let words: string[];
        try {
          words = shellWords(line);
        } catch {
          continue; // prose that looks like a command (an unterminated quote)
        }
        // Only the command itself: up to a pipe, `&&`, a redirection or a comment.
        const end = words.findIndex((w) => /^(\||&&|;|>|2>|<|2>&1)$/.test(w) || w.startsWith('#'));
        out.push({ file: path.relative(ROOT, file), words: end < 0 ? words : words.slice(0, end) });
      }
    }
  }
  return out;
}

describe('--help of every command', () => {
  it.each(COMMANDS)('dbguard %s --help', (command) => {
    const text = help(CLI, [command, '--help']);
    expect(text).toMatch(new RegExp(`^usage: dbguard ${command}`));
    // One-letter flags are written as typed (`-f`), never `--f`.
    expect(text).not.toMatch(/--[a-z](?=[\s=])/);
  });

  it('kubectl dbguard --help', () => {
    expect(help(PLUGIN, ['--help'])).toMatch(/^usage: kubectl dbguard/);
  });
});

describe('flags in the docs exist', () => {
  const lines = documentedLines();
  const known = new Map<string, Set<string>>();
  const flagsOf = (command: string): Set<string> => {
    let f = known.get(command);
    if (!f) {
      f = command === 'kubectl' ? flagsIn(help(PLUGIN, ['--help'])) : flagsIn(help(CLI, [command, '--help']));
      f.add('--help');
      known.set(command, f);
    }
    return f;
  };

  it('finds documented commands', () => {
    expect(lines.length).toBeGreaterThan(10);
  });

  it.each(lines.map((l) => [`${l.file}: ${l.words.join(' ')}`, l] as const))('%s', (_name, l) => {
    const line = l.words.join(' ');
    const words = l.words.filter((w) => w !== 'npx');
    const command = words[0] === 'kubectl' ? 'kubectl' : words[1]!;
    if (command !== 'kubectl' && !COMMANDS.includes(command)) {
      throw new Error(`unknown dbguard command '${command}' in: ${line}`);
    }
    const flags = flagsOf(command);
    for (const w of words.slice(2)) {
      if (!/^--?[a-z]/.test(w)) continue;
      const flag = w.split('=')[0]!;
      expect(flags, `${flag} in: ${line}`).toContain(flag);
    }
  });
});
