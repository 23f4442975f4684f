/**
 * Text splicing on the UTF-8 bytes of a statement text. Parse-tree locations and scanner tokens are
 * byte offsets; the end of a name is found with the scanner's tokens (quoted identifiers, U&"..."
 * UESCAPE, comments between parts), never with a regular expression.
 */
import type { ScanToken } from './parser.js';

export interface Edit {
  start: number;
  end: number;
  text: string;
}

export class Tokens {
  private byStart = new Map<number, number>();
  constructor(readonly list: ScanToken[]) {
    list.forEach((t, i) => {
      this.byStart.set(t.start, i);
    });
  }

  /** Index of the token starting at byte `pos`, skipping none. */
  at(pos: number): number | undefined {
    return this.byStart.get(pos);
  }

  /** Next/previous index that is not a comment. */
  next(i: number): number | undefined {
    for (let j = i + 1; j < this.list.length; j++) if (!isComment(this.list[j]!)) return j;
    return undefined;
  }

  prev(i: number): number | undefined {
    for (let j = i - 1; j >= 0; j--) if (!isComment(this.list[j]!)) return j;
    return undefined;
  }

  text(i: number | undefined): string {
    return i === undefined ? '' : (this.list[i]?.text ?? '');
  }

  lower(i: number | undefined): string {
    return this.text(i).toLowerCase();
  }

  /**
   * The token index of the last token of a dotted name of `parts` parts starting at token `i`
   * (`a . b . c`), or undefined when the tokens do not have that shape.
   */
  nameEnd(i: number, parts: number): number | undefined {
    let j: number | undefined = this.identEnd(i);
    for (let p = 1; p < parts; p++) {
      if (j === undefined) return undefined;
      const dot = this.next(j);
      if (dot === undefined || this.text(dot) !== '.') return undefined;
      const nxt = this.next(dot);
      if (nxt === undefined) return undefined;
      j = this.text(nxt) === '*' ? nxt : this.identEnd(nxt);
    }
    return j;
  }

  /** One identifier token, plus `UESCAPE 'c'` after a U&"..." identifier. */
  private identEnd(i: number): number | undefined {
    const t = this.list[i];
    if (!t) return undefined;
    if (/^u&"/i.test(t.text)) {
      const u = this.next(i);
      if (u !== undefined && this.lower(u) === 'uescape') {
        const c = this.next(u);
        if (c !== undefined) return c;
      }
    }
    return i;
  }

  /** Index of the `)` matching the `(` at token `i`. */
  closing(i: number): number | undefined {
    let depth = 0;
    for (let j = i; j < this.list.length; j++) {
      const s = this.list[j]!.text;
      if (s === '(') depth++;
      else if (s === ')') {
        depth--;
        if (depth === 0) return j;
      }
    }
    return undefined;
  }

  start(i: number): number {
    return this.list[i]!.start;
  }

  end(i: number): number {
    return this.list[i]!.end;
  }
}

function isComment(t: ScanToken): boolean {
  return t.tokenName === 'C_COMMENT' || t.tokenName === 'SQL_COMMENT';
}

/** Apply non-overlapping edits to the bytes; throws if two edits overlap. */
export function applyEdits(bytes: Buffer, edits: Edit[]): string {
  const sorted = [...edits].sort((a, b) => a.start - b.start);
  const parts: Buffer[] = [];
  let pos = 0;
  for (const e of sorted) {
    if (e.start < pos) throw new Error('dbguard: overlapping rewrite edits');
    parts.push(bytes.subarray(pos, e.start), Buffer.from(e.text, 'utf8'));
    pos = e.end;
  }
  parts.push(bytes.subarray(pos));
  return Buffer.concat(parts).toString('utf8');
}
