/** The operator's Prometheus metrics (contract §6), on a registry of its own so tests can run several. */
import client from 'prom-client';

export class OperatorMetrics {
  readonly registry = new client.Registry();
  readonly reconcile = new client.Counter({
    name: 'dbguard_operator_reconcile_total',
    help: 'Reconciliations by resource kind and result (success, error, invalid).',
    labelNames: ['kind', 'result'] as const,
    registers: [this.registry],
  });
  readonly injections = new client.Counter({
    name: 'dbguard_operator_injections_total',
    help: 'Sidecar injection decisions by result (injected, skipped, refused, error) and reason.',
    labelNames: ['result', 'reason'] as const,
    registers: [this.registry],
  });
  readonly policyRequests = new client.Counter({
    name: 'dbguard_operator_policy_requests_total',
    help: 'Policy requests from sidecars by result (ok, not_modified, not_found, unauthorized, forbidden, error).',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });
  readonly certExpiry = new client.Gauge({
    name: 'dbguard_operator_webhook_cert_expiry_timestamp_seconds',
    help: 'Unix time at which the webhook serving certificate expires.',
    registers: [this.registry],
  });
  readonly leader = new client.Gauge({
    name: 'dbguard_operator_leader',
    help: '1 while this replica holds the leader lease, else 0.',
    registers: [this.registry],
  });
  readonly policyWaiters = new client.Gauge({
    name: 'dbguard_operator_policy_waiters',
    help: 'Long-poll policy requests currently waiting for a change.',
    registers: [this.registry],
  });

  constructor(opts: { defaultMetrics?: boolean } = {}) {
    if (opts.defaultMetrics !== false) client.collectDefaultMetrics({ register: this.registry });
    this.leader.set(0);
  }
}
