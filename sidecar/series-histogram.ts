/**
 * A Prometheus histogram for the proxy's hot path. prom-client's Histogram.observe() validates the
 * labels and hashes them into a string on every call, about a microsecond per statement. Here the
 * caller asks once for the series of a label set and keeps it; observe() on a series is a bucket
 * search and three additions. The registry reads the series at scrape time through the same
 * interface as prom-client's own metrics, so the exposition is the one a prom-client Histogram
 * would give (`_bucket` with `le`, `+Inf`, `_sum`, `_count`).
 */
import type { Metric, Registry } from 'prom-client';

/** What prom-client's registry reads from a metric at scrape time (its own types are not exported). */
interface ExposedValue {
  labels: Record<string, string | number>;
  value: number;
  metricName: string;
  /** prom-client gives bucket values an exemplar slot; dbguard records none */
  exemplar?: null;
}
interface Exposed {
  name: string;
  help: string;
  type: 'histogram';
  values: ExposedValue[];
  aggregator: 'sum';
}

export class HistogramSeries {
  /** observations per bucket, not cumulative; the last slot counts those above every bound */
  readonly counts: number[];
  sum = 0;
  count = 0;

  constructor(
    readonly labels: Readonly<Record<string, string>>,
    private readonly bounds: readonly number[],
  ) {
    this.counts = new Array<number>(bounds.length + 1).fill(0);
  }

  observe(value: number): void {
    const v = Number.isFinite(value) ? value : 0;
    const b = this.bounds;
    let i = 0;
    while (i < b.length && v > b[i]!) i++;
    this.counts[i]!++;
    this.sum += v;
    this.count++;
  }
}

export class SeriesHistogram<L extends string> {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  private readonly byKey = new Map<string, HistogramSeries>();
  private readonly bounds: readonly number[];

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly labelNames: readonly L[],
    buckets: readonly number[],
    registers: readonly Registry[],
  ) {
    this.bounds = [...buckets].sort((a, b) => a - b);
    // The registry needs only name, help, type and get(); it is typed for prom-client's classes.
    for (const r of registers) r.registerMetric(this as unknown as Metric);
  }

  /** The series of one label set: the same object for the same values, to keep and observe on. */
  series(labels: Readonly<Record<L, string>>): HistogramSeries {
    const key = this.labelNames.map((n) => labels[n]).join('\u0000');
    let s = this.byKey.get(key);
    if (!s) {
      const own: Record<string, string> = {};
      for (const n of this.labelNames) own[n] = labels[n];
      s = new HistogramSeries(own, this.bounds);
      this.byKey.set(key, s);
    }
    return s;
  }

  async get(): Promise<Exposed> {
    const values: ExposedValue[] = [];
    const bucket = `${this.name}_bucket`;
    for (const s of this.byKey.values()) {
      let acc = 0;
      for (let i = 0; i < this.bounds.length; i++) {
        acc += s.counts[i]!;
        values.push({
          labels: { le: this.bounds[i]!, ...s.labels },
          value: acc,
          metricName: bucket,
          exemplar: null,
        });
      }
      values.push({
        labels: { le: '+Inf', ...s.labels },
        value: s.count,
        metricName: bucket,
        exemplar: null,
      });
      values.push({ labels: { ...s.labels }, value: s.sum, metricName: `${this.name}_sum` });
      values.push({ labels: { ...s.labels }, value: s.count, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: 'histogram', values, aggregator: 'sum' };
  }

  /** Registry.resetMetrics(): every series starts again from zero (the objects callers keep stay valid). */
  reset(): void {
    for (const s of this.byKey.values()) {
      s.counts.fill(0);
      s.sum = 0;
      s.count = 0;
    }
  }
}
