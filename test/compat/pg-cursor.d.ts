// pg-cursor ships no types; the two methods the matrix uses (a Submittable for pg's client.query).
declare module 'pg-cursor' {
  import type { Submittable } from 'pg';
  export default class Cursor implements Submittable {
    constructor(text: string, values?: unknown[]);
    submit: Submittable['submit'];
    read(rows: number): Promise<Record<string, unknown>[]>;
    close(): Promise<void>;
  }
}
