/**
 * The policy controller: watches DatabasePolicy and MaskingRule resources, compiles each policy with the
 * MaskingRules bound to it, publishes the result to the PolicyStore that sidecars pull from, and reports
 * back through status conditions and Events.
 *
 * - Every replica compiles and serves (so serving scales with replicas); only the leader writes status
 *   and Events, so replicas never fight over them.
 * - A broken resource never crashes anything: it gets `Ready=False` with the offending field, and the
 *   previous compiled version of that policy keeps being served.
 * - Informers list then watch; a 410 makes client-node relist; other watch errors restart the watch
 *   after a back-off; a watchdog restarts a watch that went silent (a known client issue), and a
 *   periodic resync re-reads referenced Secrets.
 */
import * as k8s from '@kubernetes/client-node';
import type { CompiledPolicy } from '../api/compiled.js';
import { type Condition, type DatabasePolicy, GROUP, type MaskingRule, VERSION } from '../api/types.js';
import { compilePolicy, formatPolicyError, isBound, namespaceOf } from '../policy/compile.js';
import { databaseUserWithCredentials } from '../policy/warnings.js';
import { EventRecorder } from './events.js';
import type { OperatorMetrics } from './metrics.js';
import type { PolicyStore } from './policy-store.js';

export interface ControllerOptions {
  kubeConfig: k8s.KubeConfig;
  store: PolicyStore;
  metrics?: OperatorMetrics;
  isLeader: () => boolean;
  log?: (fields: Record<string, unknown>) => void;
  /** re-reconcile everything this often (Secrets are read, not watched) */
  resyncSeconds?: number;
  /** restart a watch that delivered nothing for this long */
  watchdogSeconds?: number;
}

type Obj = k8s.KubernetesObject & { spec?: any; status?: any };
type MaskingProblem = import('../policy/mask-coverage.js').MaskingProblem;

const PLURALS = { DatabasePolicy: 'databasepolicies', MaskingRule: 'maskingrules' } as const;

/**
 * client-node's Watch, but a watch we abandoned can no longer report. Stopping a ListWatch aborts its
 * request, and the AbortError reaches the ListWatch's done handler later, after a restart has already
 * opened the next watch: that handler then aborts the new watch too and emits 'error', whose restart
 * does the same again, one new watch and one error line every 2 s, forever. Callbacks of a watch opened
 * before the latest `invalidate()` or the latest `watch()` are dropped.
 */
class RestartableWatch extends k8s.Watch {
  private generation = 0;

  invalidate(): void {
    this.generation++;
  }

  override watch(
    path: string,
    queryParams: Record<string, string | number | boolean | undefined>,
    callback: (phase: string, apiObj: any, watchObj?: any) => void,
    done: (err: any) => void,
  ): Promise<AbortController> {
    const mine = ++this.generation;
    return super.watch(
      path,
      queryParams,
      (phase, obj, w) => {
        if (mine === this.generation) callback(phase, obj, w);
      },
      (err) => {
        if (mine === this.generation) done(err);
      },
    );
  }
}

/** Watches one custom resource kind across all namespaces, with restart and watchdog. */
class ResourceWatch<T extends Obj> {
  readonly informer: k8s.Informer<T> & k8s.ObjectCache<T>;
  private lastActivity = Date.now();
  private watchdog: NodeJS.Timeout | undefined;
  private restartTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  /** number of times the watch was restarted (errors and watchdog) */
  restarts = 0;
  /** the first list succeeded: the cache holds what the API server has (/readyz) */
  synced = false;
  private readonly watch: RestartableWatch;

  constructor(
    kc: k8s.KubeConfig,
    readonly plural: string,
    private readonly onChange: (type: 'add' | 'update' | 'delete', obj: T) => void,
    private readonly watchdogMs: number,
    private readonly log?: (fields: Record<string, unknown>) => void,
  ) {
    const api = kc.makeApiClient(k8s.CustomObjectsApi);
    const path = `/apis/${GROUP}/${VERSION}/${plural}`;
    const list = async () => {
      const res = (await api.listClusterCustomObject({
        group: GROUP,
        version: VERSION,
        plural,
      })) as k8s.KubernetesListObject<T>;
      this.touch();
      // Only a list that succeeded makes the cache true. A failed one (403 from RBAC, 5xx) reaches the
      // informer's 'error' handler while start() still resolves: /readyz must stay 503 until a retry lists.
      this.synced = true;
      return res;
    };
    this.watch = new RestartableWatch(kc);
    this.informer = new k8s.ListWatch<T>(path, this.watch, list as any, false);
    this.informer.on('add', (o) => this.event('add', o));
    this.informer.on('update', (o) => this.event('update', o));
    this.informer.on('delete', (o) => this.event('delete', o));
    this.informer.on('connect', () => this.touch());
    this.informer.on('error', (err: unknown) => {
      const e = err as { message?: string; statusCode?: number; code?: number; body?: unknown };
      this.log?.({
        msg: 'watch error; restarting',
        plural,
        error: String(e?.message ?? err),
        // the HTTP status (403 when RBAC refuses the list or watch): what an operator's reader acts on
        ...(typeof (e?.statusCode ?? e?.code) === 'number' && (e.statusCode ?? e.code)! >= 100
          ? { status: e.statusCode ?? e.code }
          : {}),
      });
      this.scheduleRestart(2000);
    });
  }

  private touch(): void {
    this.lastActivity = Date.now();
  }

  private event(type: 'add' | 'update' | 'delete', o: T): void {
    this.touch();
    this.onChange(type, o);
  }

  private scheduleRestart(delayMs: number): void {
    if (this.stopped || this.restartTimer) return;
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      this.restarts++;
      void this.informer.start().catch(() => this.scheduleRestart(delayMs));
    }, delayMs);
  }

  async start(): Promise<void> {
    this.stopped = false;
    await this.informer.start();
    this.touch();
    this.watchdog = setInterval(
      () => {
        if (Date.now() - this.lastActivity < this.watchdogMs) return;
        // Quiet or stalled: re-watch from the last resourceVersion (no relist unless the server says 410).
        this.log?.({ msg: 'watch silent; restarting', plural: this.plural });
        this.touch();
        this.restarts++;
        this.watch.invalidate();
        void this.informer
          .stop()
          .then(() => this.informer.start())
          .catch(() => this.scheduleRestart(2000));
      },
      Math.max(250, Math.floor(this.watchdogMs / 4)),
    );
    this.watchdog.unref?.();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.watchdog) clearInterval(this.watchdog);
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.watch.invalidate();
    await this.informer.stop();
  }
}

function keyOf(o: { metadata?: { namespace?: string; name?: string } }): string {
  return `${namespaceOf(o as any)}/${o.metadata?.name ?? ''}`;
}

function sameConditions(a: Condition[] | undefined, b: Condition[]): boolean {
  if (!a || a.length !== b.length) return false;
  return b.every((c) => {
    const o = a.find((x) => x.type === c.type);
    return !!o && o.status === c.status && o.reason === c.reason && o.message === c.message;
  });
}

/** Keep lastTransitionTime when the status did not flip, as Kubernetes conventions ask. */
function withTransitionTimes(old: Condition[] | undefined, next: Condition[]): Condition[] {
  const now = new Date().toISOString();
  return next.map((c) => {
    const o = old?.find((x) => x.type === c.type);
    return {
      ...c,
      lastTransitionTime: o && o.status === c.status && o.lastTransitionTime ? o.lastTransitionTime : now,
    };
  });
}

export class PolicyController {
  private readonly core: k8s.CoreV1Api;
  private readonly custom: k8s.CustomObjectsApi;
  private readonly events: EventRecorder;
  readonly policies: ResourceWatch<DatabasePolicy & Obj>;
  readonly maskingRules: ResourceWatch<MaskingRule & Obj>;
  private readonly queue = new Set<string>();
  private running = false;
  private resync: NodeJS.Timeout | undefined;
  /** last compiled version per policy, to tell new versions from re-compiles */
  private readonly lastGood = new Map<string, CompiledPolicy>();
  private idleWaiters: (() => void)[] = [];
  /**
   * What sidecars found when they checked MaskingRules against their databases (mask-coverage.ts),
   * per MaskingRule key, for one compiled policy version: a newer version makes the report stale.
   */
  private readonly maskingReports = new Map<
    string,
    { version: string; byDatabase: Map<string, MaskingProblem[]> }
  >();

  constructor(private readonly opts: ControllerOptions) {
    const kc = opts.kubeConfig;
    this.core = kc.makeApiClient(k8s.CoreV1Api);
    this.custom = kc.makeApiClient(k8s.CustomObjectsApi);
    this.events = new EventRecorder(kc, 'dbguard-operator', opts.log);
    const watchdogMs = (opts.watchdogSeconds ?? 300) * 1000;
    this.policies = new ResourceWatch(
      kc,
      PLURALS.DatabasePolicy,
      (_t, o) => this.enqueue(keyOf(o)),
      watchdogMs,
      opts.log,
    );
    this.maskingRules = new ResourceWatch(
      kc,
      PLURALS.MaskingRule,
      (_t, o) => {
        const ns = namespaceOf(o);
        if (o.spec?.policyRef?.name) this.enqueue(`${ns}/${o.spec.policyRef.name}`);
        this.enqueueMaskingRule(keyOf(o));
      },
      watchdogMs,
      opts.log,
    );
  }

  async start(): Promise<void> {
    await this.maskingRules.start();
    await this.policies.start();
    const every = (this.opts.resyncSeconds ?? 300) * 1000;
    this.resync = setInterval(() => this.enqueueAll(), every);
    this.resync.unref?.();
  }

  async stop(): Promise<void> {
    if (this.resync) clearInterval(this.resync);
    await this.policies.stop();
    await this.maskingRules.stop();
  }

  /** After becoming leader: write every status once (a previous leader may have left them stale). */
  enqueueAll(): void {
    for (const p of this.policies.informer.list()) this.enqueue(keyOf(p));
    for (const m of this.maskingRules.informer.list()) this.enqueueMaskingRule(keyOf(m));
  }

  /** Resolves when the work queue is empty (tests). */
  idle(): Promise<void> {
    if (!this.running && this.queue.size === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  private enqueue(policyKey: string): void {
    this.queue.add(`p:${policyKey}`);
    this.kick();
  }

  private enqueueMaskingRule(key: string): void {
    this.queue.add(`m:${key}`);
    this.kick();
  }

  private kick(): void {
    if (this.running) return;
    this.running = true;
    setImmediate(() => void this.drain());
  }

  private async drain(): Promise<void> {
    while (this.queue.size > 0) {
      const item = this.queue.values().next().value as string;
      this.queue.delete(item);
      const [kind, key] = [item.slice(0, 1), item.slice(2)];
      try {
        if (kind === 'p') await this.reconcilePolicy(key);
        else await this.reconcileMaskingRule(key);
      } catch (err) {
        this.opts.metrics?.reconcile.inc({
          kind: kind === 'p' ? 'DatabasePolicy' : 'MaskingRule',
          result: 'error',
        });
        this.opts.log?.({
          msg: 'reconcile failed; will retry',
          key,
          error: String((err as Error)?.message ?? err),
        });
        const retry = setTimeout(
          () => (kind === 'p' ? this.enqueue(key) : this.enqueueMaskingRule(key)),
          2000,
        );
        retry.unref?.();
      }
    }
    this.running = false;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }

  private async readSecrets(
    namespace: string,
    names: Set<string>,
  ): Promise<Map<string, Record<string, string>>> {
    const out = new Map<string, Record<string, string>>();
    for (const name of names) {
      try {
        const s = await this.core.readNamespacedSecret({ name, namespace });
        const data: Record<string, string> = {};
        for (const [k, v] of Object.entries(s.data ?? {}))
          data[k] = Buffer.from(v, 'base64').toString('utf8');
        for (const [k, v] of Object.entries(s.stringData ?? {})) data[k] = v;
        out.set(name, data);
      } catch (err) {
        if ((err as { code?: number }).code !== 404) throw err;
      }
    }
    return out;
  }

  async reconcilePolicy(key: string): Promise<void> {
    const [namespace, name] = key.split('/') as [string, string];
    const policy = this.policies.informer.get(name, namespace);
    if (!policy) {
      this.opts.store.delete(key);
      this.lastGood.delete(key);
      return;
    }
    const bound = this.maskingRules.informer.list(namespace).filter((mr) => isBound(mr, policy));
    const secretNames = new Set<string>();
    if (policy.spec?.upstream?.caSecretRef?.name) secretNames.add(policy.spec.upstream.caSecretRef.name);
    for (const mr of bound)
      for (const c of mr.spec?.columns ?? [])
        if (c?.hash?.saltSecretRef?.name) secretNames.add(c.hash.saltSecretRef.name);
    const secrets = await this.readSecrets(namespace, secretNames);
    const result = compilePolicy(policy, bound, (n, k) => secrets.get(n)?.[k]);
    const generation = policy.metadata?.generation;
    let conditions: Condition[];
    let statusPatch: Record<string, unknown>;
    if (result.ok) {
      const previous = this.lastGood.get(key);
      this.opts.store.set(key, result.compiled);
      this.lastGood.set(key, result.compiled);
      this.opts.metrics?.reconcile.inc({ kind: 'DatabasePolicy', result: 'success' });
      const c = result.compiled;
      const masked = c.masking.reduce((n, m) => n + m.columns.length, 0);
      conditions = [
        {
          type: 'Ready',
          status: 'True',
          reason: 'Compiled',
          message: `compiled ${c.rules.length} rules and ${masked} masked columns from ${bound.length} MaskingRules; version ${c.version}`,
          observedGeneration: generation,
        },
      ];
      const warning = c.upstream.credentialsSecret
        ? databaseUserWithCredentials(
            c,
            `the credentials of Secret ${namespace}/${c.upstream.credentialsSecret}`,
          )
        : undefined;
      if (warning) {
        conditions.push({ type: 'Warning', status: 'True', ...warning, observedGeneration: generation });
        const had = policy.status?.conditions?.some(
          (x: Condition) => x.type === 'Warning' && x.reason === warning.reason,
        );
        if (!had && this.opts.isLeader())
          await this.events.record(policy, 'Warning', warning.reason, warning.message);
      }
      statusPatch = {
        observedGeneration: generation,
        policyVersion: c.version,
        maskingRules: bound.length,
        rules: c.rules.length,
      };
      if (previous?.version !== c.version && this.opts.isLeader()) {
        await this.events.record(policy, 'Normal', 'Compiled', `serving policy version ${c.version}`);
      }
    } else {
      this.opts.metrics?.reconcile.inc({ kind: 'DatabasePolicy', result: 'invalid' });
      const message = result.errors.map(formatPolicyError).join('; ');
      const served = this.lastGood.get(key);
      conditions = [
        {
          type: 'Ready',
          status: 'False',
          reason: 'InvalidSpec',
          message: served ? `${message} (still serving version ${served.version})` : message,
          observedGeneration: generation,
        },
      ];
      statusPatch = { observedGeneration: generation, maskingRules: bound.length };
      if (this.opts.isLeader() && !sameConditions(policy.status?.conditions, conditions)) {
        await this.events.record(policy, 'Warning', 'InvalidSpec', message);
      }
    }
    if (!this.opts.isLeader()) return;
    const st = policy.status ?? {};
    const unchanged =
      sameConditions(st.conditions, conditions) &&
      st.observedGeneration === statusPatch.observedGeneration &&
      (statusPatch.policyVersion === undefined || st.policyVersion === statusPatch.policyVersion) &&
      st.maskingRules === statusPatch.maskingRules &&
      (statusPatch.rules === undefined || (st as { rules?: number }).rules === statusPatch.rules);
    if (unchanged) return;
    await this.patchStatus('DatabasePolicy', namespace, name, {
      ...statusPatch,
      conditions: withTransitionTimes(st.conditions, conditions),
    });
  }

  /**
   * A sidecar of policy `namespace/policy` found, in `database`, masked tables or columns that do not
   * exist. Kept for the MaskingRules it names while `version` is the policy's current one; their
   * Ready condition turns False (ColumnNotFound / TableNotFound). False when the version is not current.
   */
  reportMaskingProblems(
    namespace: string,
    policy: string,
    version: string,
    database: string,
    problems: MaskingProblem[],
  ): boolean {
    if (this.opts.store.get(`${namespace}/${policy}`)?.version !== version) return false;
    const byRule = new Map<string, MaskingProblem[]>();
    for (const p of problems) {
      if (!p.rule.startsWith(`${namespace}/`)) continue; // a sidecar speaks for its own namespace only
      byRule.set(p.rule, [...(byRule.get(p.rule) ?? []), p]);
    }
    for (const [rule, list] of byRule) {
      let r = this.maskingReports.get(rule);
      if (r?.version !== version) {
        r = { version, byDatabase: new Map() };
        this.maskingReports.set(rule, r);
      }
      r.byDatabase.set(database, list);
      this.enqueueMaskingRule(rule);
    }
    return true;
  }

  /** Conditions from the sidecars' reports for this MaskingRule under the policy's current version. */
  private reportedProblems(key: string, mr: MaskingRule & Obj, policyKey: string): Condition | undefined {
    const r = this.maskingReports.get(key);
    if (!r || r.version !== this.opts.store.get(policyKey)?.version) return undefined;
    const lines: string[] = [];
    let reason = 'TableNotFound';
    const cols: { table?: string; column?: string }[] = mr.spec?.columns ?? [];
    for (const [database, list] of r.byDatabase) {
      for (const p of list) {
        if (p.reason === 'column_not_found') reason = 'ColumnNotFound';
        const i = cols.findIndex(
          (c) =>
            (c.table === p.table || c.table === `${p.schema}.${p.table}`) &&
            (p.reason === 'table_not_found' || c.column === p.column),
        );
        const field =
          i >= 0 ? `spec.columns[${i}].${p.reason === 'column_not_found' ? 'column' : 'table'}: ` : '';
        const what =
          p.reason === 'column_not_found'
            ? `column ${p.column} of ${p.schema}.${p.table}`
            : `table ${p.schema}.${p.table}`;
        lines.push(
          `${field}${what} does not exist in database ${database}${p.suggestion ? ` (did you mean ${p.suggestion}?)` : ''}`,
        );
      }
    }
    if (!lines.length) return undefined;
    return {
      type: 'Ready',
      status: 'False',
      reason,
      message: `${lines.join('; ')}; reported by a sidecar: masked subjects are refused a table whose masked column is missing`,
    };
  }

  async reconcileMaskingRule(key: string): Promise<void> {
    if (!this.opts.isLeader()) return;
    const [namespace, name] = key.split('/') as [string, string];
    const mr = this.maskingRules.informer.get(name, namespace);
    if (!mr) return;
    const policyName = mr.spec?.policyRef?.name;
    const policy = policyName ? this.policies.informer.get(policyName, namespace) : undefined;
    const reported = policy ? this.reportedProblems(key, mr, `${namespace}/${policyName}`) : undefined;
    const conditions: Condition[] = reported
      ? [reported]
      : policy
        ? [
            {
              type: 'Ready',
              status: 'True',
              reason: 'Bound',
              message: `bound to DatabasePolicy ${namespace}/${policyName}`,
            },
          ]
        : [
            {
              type: 'Ready',
              status: 'False',
              reason: 'PolicyNotFound',
              message: `spec.policyRef.name: DatabasePolicy ${namespace}/${policyName ?? ''} not found; these columns are not masked anywhere`,
            },
          ];
    const generation = mr.metadata?.generation;
    this.opts.metrics?.reconcile.inc({ kind: 'MaskingRule', result: policy ? 'success' : 'invalid' });
    const columns = mr.spec?.columns?.length ?? 0;
    if (
      sameConditions(mr.status?.conditions, conditions) &&
      mr.status?.observedGeneration === generation &&
      (mr.status as { columns?: number } | undefined)?.columns === columns
    )
      return;
    if (!policy) await this.events.record(mr, 'Warning', 'PolicyNotFound', conditions[0]!.message);
    if (reported) await this.events.record(mr, 'Warning', reported.reason, reported.message);
    await this.patchStatus('MaskingRule', namespace, name, {
      observedGeneration: generation,
      columns,
      conditions: withTransitionTimes(mr.status?.conditions, conditions),
    });
  }

  private async patchStatus(
    kind: keyof typeof PLURALS,
    namespace: string,
    name: string,
    status: Record<string, unknown>,
  ) {
    try {
      await this.custom.patchNamespacedCustomObjectStatus(
        { group: GROUP, version: VERSION, namespace, plural: PLURALS[kind], name, body: { status } },
        k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
      );
    } catch (err) {
      if ((err as { code?: number }).code === 404) return; // deleted meanwhile
      throw err;
    }
  }
}
