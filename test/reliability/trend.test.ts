/** The soak's RSS criterion: a least-squares line over the post-warm-up samples (bench/reliability/trend.ts). */
import { describe, expect, it } from 'vitest';
import { rssTrend } from '../../bench/reliability/trend.js';

const series = (n: number, f: (i: number) => number) =>
  Array.from({ length: n }, (_, i) => ({ t: i * 1000, mb: f(i) }));

describe('rssTrend', () => {
  it('reads a steady line as growth 0 and a rising one as its rise, from the warm-up end on', () => {
    const flat = rssTrend(
      series(60, () => 200),
      0,
    )!;
    expect(flat.growth).toBe(0);
    expect(flat.slopeMbPerMin).toBe(0);
    // 100 → 110 MiB over the fitted part only: warm-up (a climb from 50) is left out
    const climbing = series(100, (i) => (i < 40 ? 50 + i : 100 + ((i - 40) * 10) / 59));
    const t = rssTrend(climbing, 40_000)!;
    expect(t.samples).toBe(60);
    expect(t.fitStartMb).toBeCloseTo(100, 6);
    expect(t.fitEndMb).toBeCloseTo(110, 6);
    expect(t.growth).toBeCloseTo(0.1, 6);
    expect(t.slopeMbPerMin).toBeCloseTo((10 / 59) * 60, 6);
  });

  it('is not moved by one high sample the way a two-sample comparison is', () => {
    // a sawtooth around 200 MiB (garbage collected every 10 s) whose last sample is a peak
    const saw = series(120, (i) => 200 + (i % 10) * 3);
    const t = rssTrend(saw, 0)!;
    const lastVsFirst = (saw.at(-1)!.mb - saw[0]!.mb) / saw[0]!.mb;
    expect(lastVsFirst).toBeCloseTo(0.135, 3);
    expect(Math.abs(t.growth)).toBeLessThan(0.02); // the sawtooth phase tilts the line a little
    expect([t.minMb, t.medianMb, t.maxMb]).toEqual([200, 213.5, 227]);
  });

  it('gives no line from fewer than 3 samples', () => {
    expect(
      rssTrend(
        series(10, () => 1),
        8000,
      ),
    ).toBeUndefined();
  });
});
