/**
 * PostgreSQL's own parser (libpg-query, WASM). `initParser()` loads the module once; everything
 * after that is synchronous, so judging a statement never yields the event loop.
 */
import { fingerprintSync, loadModule, normalizeSync, parseSync, type ScanToken, scanSync } from 'libpg-query';

let loading: Promise<void> | undefined;
let loaded = false;

/** Load the parser's WASM module; call once at startup (repeated calls share the same load). */
export async function initParser(): Promise<void> {
  loading ??= loadModule().then(() => {
    loaded = true;
  });
  await loading;
}

export function parserReady(): boolean {
  return loaded;
}

function requireParser(): void {
  if (!loaded) throw new Error('dbguard: policy parser not initialised: await initParser() first');
}

/** One raw statement of a parsed text: its node and its byte range in the UTF-8 text. */
export interface RawStatement {
  /** `{ SelectStmt: {...} }` style wrapper */
  stmt: Record<string, any>;
  /** byte offset of the statement in the whole text */
  start: number;
  /** byte offset just past the statement (excluding the `;`) */
  end: number;
}

export interface ParsedText {
  bytes: Buffer;
  statements: RawStatement[];
}

export class ParseError extends Error {
  constructor(
    message: string,
    readonly cursorPosition?: number,
  ) {
    super(message);
    this.name = 'ParseError';
  }
}

export function parseText(sql: string): ParsedText {
  requireParser();
  let tree: any;
  try {
    tree = parseSync(sql);
  } catch (e) {
    const details = (e as { sqlDetails?: { message?: string; cursorPosition?: number } }).sqlDetails;
    throw new ParseError(details?.message ?? (e as Error).message, details?.cursorPosition);
  }
  const bytes = Buffer.from(sql, 'utf8');
  const statements: RawStatement[] = [];
  for (const raw of tree.stmts ?? []) {
    const start = raw.stmt_location ?? 0;
    const end = raw.stmt_len ? start + raw.stmt_len : bytes.length;
    if (!raw.stmt) continue; // an empty statement between two semicolons
    statements.push({ stmt: raw.stmt, start, end });
  }
  return { bytes, statements };
}

/** Tokens of a text with BYTE offsets (libpg-query's scanner reports byte positions). */
export function scanText(sql: string): ScanToken[] {
  requireParser();
  return scanSync(sql).tokens;
}

export function normalizeStatement(sql: string): string {
  requireParser();
  try {
    return normalizeSync(sql);
  } catch {
    return '';
  }
}

export function fingerprintStatement(sql: string): string {
  requireParser();
  try {
    return fingerprintSync(sql);
  } catch {
    return '';
  }
}

export type { ScanToken };
