/**
 * Collects the bytes to send to one socket while a received chunk is processed, then writes them
 * in one call. Adjacent slices of the same received buffer are merged back into one slice, so a
 * chunk whose messages all pass through unchanged goes out as the very buffer it came in as.
 */
export class OutBuffer {
  private parts: Buffer[] = [];
  /** the run of adjacent slices being collected: its first slice, and where the run ends */
  private run: Buffer | null = null;
  private runEnd = 0;
  private bytes = 0;

  push(b: Buffer): void {
    if (b.length === 0) return;
    const run = this.run;
    // Kept as numbers until the run ends: a view per merged message would cost more than the merge.
    if (run && run.buffer === b.buffer && this.runEnd === b.byteOffset) {
      this.runEnd += b.length;
    } else {
      this.endRun();
      this.run = b;
      this.runEnd = b.byteOffset + b.length;
    }
    this.bytes += b.length;
  }

  private endRun(): void {
    const run = this.run;
    if (!run) return;
    const len = this.runEnd - run.byteOffset;
    this.parts.push(len === run.length ? run : Buffer.from(run.buffer, run.byteOffset, len));
    this.run = null;
  }

  get length(): number {
    return this.bytes;
  }

  /** Takes everything collected as one buffer (or null when empty). */
  take(): Buffer | null {
    this.endRun();
    if (this.parts.length === 0) return null;
    const out = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts, this.bytes);
    this.parts = [];
    this.bytes = 0;
    return out;
  }
}

/**
 * Pauses a readable socket while any reason holds and resumes it when the last one clears, so
 * that backpressure, a pending policy decision and an internal query can all hold one socket.
 */
export class PauseGate {
  private readonly reasons = new Set<string>();
  constructor(private readonly target: { pause(): unknown; resume(): unknown }) {}
  hold(reason: string): void {
    if (this.reasons.size === 0) this.target.pause();
    this.reasons.add(reason);
  }
  release(reason: string): void {
    if (!this.reasons.delete(reason)) return;
    if (this.reasons.size === 0) this.target.resume();
  }
  has(reason: string): boolean {
    return this.reasons.has(reason);
  }
  get held(): boolean {
    return this.reasons.size > 0;
  }
}
