/**
 * SeriesHistogram must expose exactly what a prom-client Histogram with the same observations would:
 * dashboards and alerts on dbguard_query_duration_seconds read its buckets, sum and count.
 */
import { Histogram, Registry, type RegistryContentType } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { SeriesHistogram } from '../../sidecar/series-histogram.js';

const BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

function pair(contentType: RegistryContentType = Registry.PROMETHEUS_CONTENT_TYPE) {
  const ours = new Registry();
  const theirs = new Registry();
  // prom-client types a registry by its content type; the metrics are the same for both
  for (const r of [ours, theirs]) (r as unknown as Registry<RegistryContentType>).setContentType(contentType);
  const fast = new SeriesHistogram('h_seconds', 'help text', ['policy', 'decision'], BUCKETS, [ours]);
  const slow = new Histogram({
    name: 'h_seconds',
    help: 'help text',
    labelNames: ['policy', 'decision'],
    buckets: BUCKETS,
    registers: [theirs],
  });
  return { ours, theirs, fast, slow };
}

describe('SeriesHistogram', () => {
  it.each([
    ['Prometheus', Registry.PROMETHEUS_CONTENT_TYPE],
    ['OpenMetrics', Registry.OPENMETRICS_CONTENT_TYPE],
  ] as const)('gives the same %s text and JSON as prom-client for the same observations', async (_, type) => {
    const { ours, theirs, fast, slow } = pair(type);
    // bounds exactly, between bounds, zero, above the last bound, and odd label text
    const values = [0, 0.0005, 0.0005001, 0.001, 0.003, 0.05, 0.7, 1, 9.99, 10, 10.5, 3600];
    let seed = 7;
    for (let i = 0; i < 500; i++) {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      values.push((seed / 2 ** 31) * 12);
    }
    const labelSets = [
      { policy: 'shop/orders', decision: 'allow' },
      { policy: 'shop/orders', decision: 'deny' },
      { policy: 'a "quoted"\\ name\nx', decision: 'mask' },
    ];
    values.forEach((v, i) => {
      const labels = labelSets[i % labelSets.length]!;
      fast.series(labels).observe(v);
      slow.observe(labels, v);
    });
    expect(await ours.metrics()).toBe(await theirs.metrics());
    expect(await ours.getMetricsAsJSON()).toEqual(await theirs.getMetricsAsJSON());
  });

  it('hands out one series per label set, and a reset zeroes it without invalidating it', async () => {
    const { ours, fast } = pair();
    const a = fast.series({ policy: 'p', decision: 'allow' });
    expect(fast.series({ decision: 'allow', policy: 'p' })).toBe(a);
    expect(fast.series({ policy: 'p', decision: 'deny' })).not.toBe(a);
    a.observe(0.002);
    a.observe(Number.NaN); // counted as 0, like a non-finite duration the caller clamps
    expect(await ours.metrics()).toContain('h_seconds_count{policy="p",decision="allow"} 2');
    ours.resetMetrics();
    a.observe(20);
    const text = await ours.metrics();
    expect(text).toContain('h_seconds_count{policy="p",decision="allow"} 1');
    expect(text).toContain('h_seconds_bucket{le="10",policy="p",decision="allow"} 0');
    expect(text).toContain('h_seconds_bucket{le="+Inf",policy="p",decision="allow"} 1');
    expect(text).toContain('h_seconds_sum{policy="p",decision="allow"} 20');
  });
});
