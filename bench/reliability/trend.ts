/**
 * The RSS criterion of the soak as a trend, not a pair of samples: one sample of a garbage-collected
 * process can sit anywhere between its live size and its last peak, so a least-squares line through
 * every post-warm-up sample (one a second) says whether memory drifts up, and by how much.
 */
import { median } from '../stats.js';

export interface Sample {
  /** ms since the load started */
  t: number;
  mb: number;
}

export interface RssTrend {
  /** samples the line was fitted to (those at or after `fromMs`) */
  samples: number;
  fromMs: number;
  toMs: number;
  /** the fitted line at the end of warm-up and at the last sample */
  fitStartMb: number;
  fitEndMb: number;
  /** MiB per minute */
  slopeMbPerMin: number;
  /** (fitEnd - fitStart) / fitStart */
  growth: number;
  /** raw samples after warm-up */
  minMb: number;
  medianMb: number;
  maxMb: number;
}

/** Ordinary least squares y = a + b·t over the samples at or after `fromMs`; undefined with < 3. */
export function rssTrend(all: readonly Sample[], fromMs: number): RssTrend | undefined {
  const s = all.filter((x) => x.t >= fromMs);
  if (s.length < 3) return undefined;
  const n = s.length;
  const mt = s.reduce((a, x) => a + x.t, 0) / n;
  const my = s.reduce((a, x) => a + x.mb, 0) / n;
  let sxy = 0;
  let sxx = 0;
  for (const x of s) {
    sxy += (x.t - mt) * (x.mb - my);
    sxx += (x.t - mt) ** 2;
  }
  const b = sxx > 0 ? sxy / sxx : 0;
  const line = (t: number) => my + b * (t - mt);
  const from = s[0]!.t;
  const to = s[n - 1]!.t;
  const mbs = s.map((x) => x.mb);
  return {
    samples: n,
    fromMs: from,
    toMs: to,
    fitStartMb: line(from),
    fitEndMb: line(to),
    slopeMbPerMin: b * 60_000,
    growth: (line(to) - line(from)) / line(from),
    minMb: Math.min(...mbs),
    medianMb: median(mbs),
    maxMb: Math.max(...mbs),
  };
}
