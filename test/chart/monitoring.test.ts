/**
 * The alert rules (charts/dbguard/files/prometheus-rules.yaml, the one source of dbguard's alerts) and the
 * Grafana dashboard: well formed, every metric they use is one dbguard exports (or a known kube-state-metrics /
 * API server metric), every alert has a runbook in docs/getting-started/sre.md, and the example alerts in
 * docs/observability.md are the chart's, unchanged.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { OperatorMetrics } from '../../operator/metrics.js';
import { SidecarMetrics } from '../../sidecar/metrics.js';
import { CHART, DOCS } from './paths.js';

interface Rule {
  alert?: string;
  record?: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

const rulesFile = parse(fs.readFileSync(path.join(CHART, 'files/prometheus-rules.yaml'), 'utf8')) as {
  groups: { name: string; rules: Rule[] }[];
};
const alerts = rulesFile.groups.flatMap((g) => g.rules);
/** Grafana's variable reference, not a JavaScript template */
const DATASOURCE = ['$', '{datasource}'].join('');
const dashboard = JSON.parse(fs.readFileSync(path.join(CHART, 'files/dashboards/dbguard.json'), 'utf8'));

/** Metric names from kube-state-metrics, the API server and Prometheus itself that the rules may use. */
const EXTERNAL = new Set([
  'up',
  'kube_pod_container_status_ready',
  'kube_pod_status_phase',
  'apiserver_admission_webhook_rejection_count',
  'apiserver_admission_webhook_admission_duration_seconds_bucket',
]);

async function exported(): Promise<Set<string>> {
  const names = new Set<string>();
  const registries = [
    new SidecarMetrics({ defaultMetrics: false }).registry,
    new OperatorMetrics({ defaultMetrics: false }).registry,
  ];
  for (const r of registries)
    for (const m of await r.getMetricsAsJSON()) {
      names.add(m.name);
      if (String(m.type) === 'histogram')
        for (const s of ['_bucket', '_sum', '_count']) names.add(`${m.name}${s}`);
    }
  return names;
}

/** Metric names in a PromQL expression: identifiers that name series (dbguard_*, kube_*, apiserver_*, up). */
function metricsIn(expr: string): string[] {
  const withoutStrings = expr.replace(/"(?:[^"\\]|\\.)*"/g, '""');
  return [...withoutStrings.matchAll(/\b(dbguard_\w+|kube_\w+|apiserver_\w+|up)\b(?=\s*[{[)\s]|$)/g)].map(
    (m) => m[1]!,
  );
}

/** GitHub's anchor for a Markdown heading. */
const anchor = (heading: string) =>
  heading
    .trim()
    .toLowerCase()
    .replace(/[^\w\s-]/g, '')
    .replace(/\s/g, '-');

describe('alert rules', () => {
  it('are well formed and named uniquely', () => {
    expect(rulesFile.groups.length).toBeGreaterThan(0);
    const names = alerts.map((a) => a.alert);
    expect(new Set(names).size).toBe(names.length);
    for (const a of alerts) {
      expect(a.alert, JSON.stringify(a)).toMatch(/^Dbguard[A-Z]\w+$/);
      expect(a.expr.trim().length).toBeGreaterThan(0);
      expect(['warning', 'critical']).toContain(a.labels?.severity);
      expect(a.annotations?.summary, a.alert).toBeTruthy();
      if (a.for) expect(a.for).toMatch(/^\d+[smh]$/);
      // balanced brackets: a cheap guard against a broken expression
      for (const [o, c] of ['()', '{}', '[]'])
        expect(a.expr.split(o!).length, `${a.alert} ${o}${c}`).toBe(a.expr.split(c!).length);
    }
  });

  it('cover what the issue asks for', () => {
    const names = new Set(alerts.map((a) => a.alert));
    for (const n of [
      'DbguardBlockedQuerySpike',
      'DbguardPolicySyncStale',
      'DbguardSidecarNoPolicy',
      'DbguardInjectionErrors',
      'DbguardWebhookCallFailures',
      'DbguardWebhookSlow',
      'DbguardWebhookCertExpiringSoon',
      'DbguardNoLeader',
      'DbguardOperatorDown',
    ])
      expect(names).toContain(n);
  });

  it('use only metrics that exist', async () => {
    const known = await exported();
    for (const a of alerts) {
      const used = metricsIn(a.expr);
      expect(used.length, a.alert).toBeGreaterThan(0);
      for (const m of used) expect(known.has(m) || EXTERNAL.has(m), `${a.alert}: ${m}`).toBe(true);
    }
  });

  it('each link to a runbook section that exists', () => {
    const sre = fs.readFileSync(path.join(DOCS, 'getting-started/sre.md'), 'utf8');
    const anchors = new Set([...sre.matchAll(/^#{2,4} (.+)$/gm)].map((m) => anchor(m[1]!)));
    for (const a of alerts) {
      const url = a.annotations?.runbook_url ?? '';
      const m = /docs\/getting-started\/sre\.md#([\w-]+)$/.exec(url);
      expect(m, `${a.alert}: runbook_url ${url}`).not.toBeNull();
      expect(anchors, `${a.alert} → #${m![1]}`).toContain(m![1]);
    }
  });

  it('include the examples of docs/observability.md unchanged', () => {
    const doc = fs.readFileSync(path.join(DOCS, 'observability.md'), 'utf8');
    const block = /### Example alert rules\s+```yaml\n([\s\S]*?)```/.exec(doc);
    expect(block, 'docs/observability.md has its "### Example alert rules" yaml block').not.toBeNull();
    const norm = (s: string) => s.replace(/\s+/g, ' ').trim();
    const byName = new Map(alerts.map((a) => [a.alert, a]));
    for (const g of (parse(block![1]!) as { groups: { rules: Rule[] }[] }).groups)
      for (const r of g.rules) {
        const mine = byName.get(r.alert);
        expect(mine, `${r.alert} from docs/observability.md`).toBeDefined();
        expect(norm(mine!.expr)).toBe(norm(r.expr));
        expect(mine!.labels?.severity).toBe(r.labels?.severity);
      }
  });
});

describe('Grafana dashboard', () => {
  const targets: { title: string; expr: string }[] = dashboard.panels.flatMap(
    (p: { title: string; targets?: { expr: string }[] }) =>
      (p.targets ?? []).map((t) => ({ title: p.title, expr: t.expr })),
  );

  it('has a stable uid, a Prometheus data source variable and panels on a 24-column grid', () => {
    expect(dashboard.uid).toBe('dbguard-overview');
    expect(dashboard.templating.list.map((v: { name: string }) => v.name)).toEqual([
      'datasource',
      'namespace',
      'policy',
    ]);
    for (const p of dashboard.panels) {
      expect(p.gridPos.x + p.gridPos.w, p.title).toBeLessThanOrEqual(24);
      if (p.type !== 'row') expect(p.datasource?.uid, p.title).toBe(DATASOURCE);
    }
    const ids = dashboard.panels.map((p: { id: number }) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
  });

  it('queries only metrics that exist, and shows every contract metric', async () => {
    const known = await exported();
    const used = new Set<string>();
    for (const t of targets)
      for (const m of metricsIn(t.expr)) {
        expect(known.has(m) || EXTERNAL.has(m), `${t.title}: ${m}`).toBe(true);
        used.add(m.replace(/_(bucket|sum|count)$/, ''));
      }
    for (const m of [
      'dbguard_queries_total',
      'dbguard_denied_queries_total',
      'dbguard_masked_queries_total',
      'dbguard_query_duration_seconds',
      'dbguard_connections_active',
      'dbguard_connections_total',
      'dbguard_policy_info',
      'dbguard_policy_last_sync_timestamp_seconds',
      'dbguard_policy_sync_errors_total',
      'dbguard_approvals_total',
      'dbguard_operator_reconcile_total',
      'dbguard_operator_injections_total',
      'dbguard_operator_policy_requests_total',
      'dbguard_operator_webhook_cert_expiry_timestamp_seconds',
      'dbguard_operator_leader',
    ])
      expect(used, m).toContain(m);
  });
});
