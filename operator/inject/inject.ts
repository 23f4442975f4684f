/**
 * The one injection function: given a pod (or a pod template: the same metadata/spec shape), decide whether
 * and how to add the dbguard sidecar, and express the change as JSONPatch operations. The mutating webhook
 * returns these operations; `dbguard inject` applies them to templates. It is pure: no I/O, no clock.
 *
 * Idempotent by construction: a pod that already has the sidecar container only gets what is missing
 * (status annotation, operator CA, PGHOST/PGPORT on containers added since), so running it again on its own
 * output (webhook reinvocation, a pre-injected template) yields no operations.
 */
import type { V1Container, V1ResourceRequirements, V1Volume } from '@kubernetes/client-node';
import {
  DEFAULT_METRICS_PORT,
  DEFAULT_PROXY_PORT,
  INJECT_LABEL,
  METRICS_PORT_ANNOTATION,
  OPERATOR_CA_ANNOTATION,
  PG_ENV_ANNOTATION,
  POLICY_ANNOTATION,
  PORT_ANNOTATION,
  SIDECAR_NAME,
  STATUS_ANNOTATION,
  STATUS_INJECTED,
  VOLUME_CREDENTIALS,
} from './constants.js';
import { escapePointer, type JsonPatchOp } from './json-patch.js';
import {
  CREDENTIALS_ARG,
  credentialsMount,
  credentialsVolume,
  type SidecarParams,
  sidecarContainer,
  sidecarVolumes,
} from './sidecar.js';

/** The parts of a pod the injector reads; anything else passes through untouched. */
export interface PodLike {
  metadata?: {
    name?: string;
    generateName?: string;
    namespace?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  };
  spec?: {
    containers?: V1Container[];
    initContainers?: V1Container[];
    volumes?: V1Volume[];
    hostNetwork?: boolean;
    [k: string]: unknown;
  };
  [k: string]: unknown;
}

export interface InjectOptions {
  image: string;
  imagePullPolicy?: string;
  /** Kubernetes 1.29+: the sidecar is an init container with restartPolicy Always */
  nativeSidecar: boolean;
  /** https://dbguard-operator.<operator namespace>.svc:8443 */
  operatorUrl: string;
  /** PEM the sidecar trusts for the operator; written to the pod's dbguard.io/operator-ca annotation */
  operatorCaPem?: string;
  resources?: V1ResourceRequirements;
}

/** What is known about the DatabasePolicy a pod names; `undefined` when nothing can be known (offline). */
export interface PolicyInfo {
  exists: boolean;
  /** spec.upstream.credentialsSecretRef.name */
  credentialsSecret?: string;
}

export interface InjectContext {
  /** the request's namespace when the object carries none (messages only) */
  namespace?: string;
  /** kind of the pod's controller (Job, ReplicaSet, ...), for warnings */
  ownerKind?: string;
}

export type Outcome = 'injected' | 'skipped' | 'refused';

export interface InjectionResult {
  outcome: Outcome;
  /** machine-readable, the `reason` label of dbguard_operator_injections_total */
  reason: string;
  /** one sentence for humans: the admission message, the Event, the CLI error */
  message: string;
  patch: JsonPatchOp[];
  /** admission warnings (kubectl prints them) */
  warnings: string[];
}

const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

export function isInjectionRequested(pod: PodLike): boolean {
  return pod.metadata?.labels?.[INJECT_LABEL] === 'true';
}

export function policyNameOf(pod: PodLike): string | undefined {
  const v = pod.metadata?.annotations?.[POLICY_ANNOTATION]?.trim();
  return v ? v : undefined;
}

export function hasSidecar(pod: PodLike): boolean {
  return [...(pod.spec?.initContainers ?? []), ...(pod.spec?.containers ?? [])].some(
    (c) => c?.name === SIDECAR_NAME,
  );
}

function parsePort(raw: string | undefined, fallback: number, annotation: string): number | string {
  if (raw === undefined || raw.trim() === '') return fallback;
  const n = Number(raw.trim());
  if (!/^\d+$/.test(raw.trim()) || n < 1 || n > 65535)
    return `annotation ${annotation}: ${JSON.stringify(raw)} is not a port number (1-65535)`;
  return n;
}

const result = (
  outcome: Outcome,
  reason: string,
  message: string,
  patch: JsonPatchOp[] = [],
  warnings: string[] = [],
): InjectionResult => ({ outcome, reason, message, patch, warnings });

const refuse = (reason: string, message: string) => result('refused', reason, message);

/**
 * Decide and build the patch. `policy` is what the caller found about the named DatabasePolicy
 * (undefined: unknown, inject without credentials and without a warning).
 */
export function injectPod(
  pod: PodLike,
  opts: InjectOptions,
  policy?: PolicyInfo,
  context: InjectContext = {},
): InjectionResult {
  const namespace = context.namespace ?? pod?.metadata?.namespace;
  if (!pod || typeof pod !== 'object' || !pod.spec || !Array.isArray(pod.spec.containers))
    return refuse('invalid-pod', 'the object is not a pod: spec.containers is missing');
  if (!isInjectionRequested(pod))
    return result('skipped', 'not-requested', `the pod does not carry the label ${INJECT_LABEL}: "true"`);

  const annotations = pod.metadata?.annotations ?? {};
  const port = parsePort(annotations[PORT_ANNOTATION], DEFAULT_PROXY_PORT, PORT_ANNOTATION);
  if (typeof port === 'string') return refuse('invalid-annotation', port);
  const metricsPort = parsePort(
    annotations[METRICS_PORT_ANNOTATION],
    DEFAULT_METRICS_PORT,
    METRICS_PORT_ANNOTATION,
  );
  if (typeof metricsPort === 'string') return refuse('invalid-annotation', metricsPort);
  const pgEnv = annotations[PG_ENV_ANNOTATION] !== 'false';

  if (hasSidecar(pod)) {
    // already injected (by an earlier webhook pass or by `dbguard inject`): only fill in what is missing
    const ops: JsonPatchOp[] = [];
    annotationOps(pod, opts, ops);
    const native = (pod.spec.initContainers ?? []).some((c) => c?.name === SIDECAR_NAME);
    if (pgEnv) pgEnvOps(pod, port, native, ops);
    if (policy?.credentialsSecret) credentialsOps(pod, policy.credentialsSecret, ops);
    return result('skipped', 'already-injected', `container ${SIDECAR_NAME} is already present`, ops);
  }

  const policyName = policyNameOf(pod);
  if (!policyName)
    return refuse(
      'missing-policy',
      `the pod asks for dbguard (label ${INJECT_LABEL}) but has no annotation ${POLICY_ANNOTATION} naming the DatabasePolicy to enforce`,
    );
  if (policyName.length > 253 || !DNS_SUBDOMAIN.test(policyName))
    return refuse(
      'invalid-annotation',
      `annotation ${POLICY_ANNOTATION}: ${JSON.stringify(policyName)} is not a valid resource name (lower case letters, digits, '-', '.')`,
    );
  if (port === metricsPort)
    return refuse(
      'port-conflict',
      `annotations ${PORT_ANNOTATION} and ${METRICS_PORT_ANNOTATION} both say ${port}: the proxy and its metrics need two ports`,
    );
  if (pod.spec.hostNetwork)
    return refuse(
      'host-network',
      'the pod uses hostNetwork: a dbguard sidecar would listen on the node and clash with other pods; remove the label or hostNetwork',
    );

  const all = [...(pod.spec.initContainers ?? []), ...pod.spec.containers];
  for (const c of all) {
    for (const p of c?.ports ?? []) {
      const hit =
        p.containerPort === port
          ? ['proxy', port, PORT_ANNOTATION]
          : p.containerPort === metricsPort
            ? ['metrics', metricsPort, METRICS_PORT_ANNOTATION]
            : undefined;
      if (hit)
        return refuse(
          'port-conflict',
          `container "${c.name}" declares containerPort ${p.containerPort}, which the dbguard ${hit[0]} needs in the pod's network namespace; set the annotation ${hit[2]} to a free port`,
        );
    }
  }

  const params: SidecarParams = {
    image: opts.image,
    imagePullPolicy: opts.imagePullPolicy,
    native: opts.nativeSidecar,
    operatorUrl: opts.operatorUrl,
    policy: policyName,
    port,
    metricsPort,
    credentialsSecret: policy?.credentialsSecret,
    resources: opts.resources,
  };
  const volumes = sidecarVolumes(params);
  const taken = new Set((pod.spec.volumes ?? []).map((v) => v?.name));
  const clash = volumes.find((v) => taken.has(v.name));
  if (clash)
    return refuse(
      'name-conflict',
      `the pod already has a volume named "${clash.name}", which the dbguard sidecar needs`,
    );

  const warnings: string[] = [];
  if (policy && !policy.exists)
    warnings.push(
      `dbguard: DatabasePolicy "${policyName}" does not exist in namespace "${namespace ?? '(unknown)'}" yet; ` +
        'the sidecar admits no connections until it does',
    );

  if (!opts.nativeSidecar && (context.ownerKind === 'Job' || context.ownerKind === 'CronJob'))
    warnings.push(
      'dbguard: the sidecar runs as a regular container (the cluster has no native sidecars), so it keeps this ' +
        "Job's pod running after the job's containers finish",
    );

  const ops: JsonPatchOp[] = [];
  // env first: the init container indexes below are the pod's own, before the sidecar is inserted at 0
  if (pgEnv) pgEnvOps(pod, port, opts.nativeSidecar, ops);
  const sidecar = sidecarContainer(params);
  if (opts.nativeSidecar) {
    // first, so that init containers after it (migrations) already reach the database through it
    if (pod.spec.initContainers?.length)
      ops.push({ op: 'add', path: '/spec/initContainers/0', value: sidecar });
    else ops.push({ op: 'add', path: '/spec/initContainers', value: [sidecar] });
  } else {
    // last, so `kubectl logs`/`exec` still default to the app's first container
    ops.push({ op: 'add', path: '/spec/containers/-', value: sidecar });
  }
  if (pod.spec.volumes) for (const v of volumes) ops.push({ op: 'add', path: '/spec/volumes/-', value: v });
  else ops.push({ op: 'add', path: '/spec/volumes', value: volumes });
  annotationOps(pod, opts, ops);
  return result(
    'injected',
    opts.nativeSidecar ? 'native-sidecar' : 'container',
    `dbguard sidecar injected (${opts.nativeSidecar ? 'native sidecar' : 'container'}, policy ${policyName}, port ${port})`,
    ops,
    warnings,
  );
}

function annotationOps(pod: PodLike, opts: InjectOptions, ops: JsonPatchOp[]): void {
  const current = pod.metadata?.annotations;
  const wanted: Record<string, string> = { [STATUS_ANNOTATION]: STATUS_INJECTED };
  if (opts.operatorCaPem) wanted[OPERATOR_CA_ANNOTATION] = opts.operatorCaPem;
  const changes = Object.entries(wanted).filter(([k, v]) => current?.[k] !== v);
  if (changes.length === 0) return;
  if (!pod.metadata) {
    ops.push({ op: 'add', path: '/metadata', value: { annotations: Object.fromEntries(changes) } });
  } else if (!current) {
    ops.push({ op: 'add', path: '/metadata/annotations', value: Object.fromEntries(changes) });
  } else {
    for (const [k, v] of changes)
      ops.push({ op: 'add', path: `/metadata/annotations/${escapePointer(k)}`, value: v });
  }
}

/**
 * A pod injected without knowing the policy (`dbguard inject` without policy documents) lacks the
 * credentials mount; the webhook adds it when it learns the policy names a Secret.
 */
function credentialsOps(pod: PodLike, secretName: string, ops: JsonPatchOp[]): void {
  if ((pod.spec?.volumes ?? []).some((v) => v?.name === VOLUME_CREDENTIALS)) return;
  for (const field of ['initContainers', 'containers'] as const) {
    const list = pod.spec?.[field] ?? [];
    const i = list.findIndex((c) => c?.name === SIDECAR_NAME);
    if (i < 0) continue;
    const c = list[i]!;
    const base = `/spec/${field}/${i}`;
    const volume = credentialsVolume(secretName);
    const mount = credentialsMount();
    const arg = CREDENTIALS_ARG;
    if (pod.spec?.volumes) ops.push({ op: 'add', path: '/spec/volumes/-', value: volume });
    else ops.push({ op: 'add', path: '/spec/volumes', value: [volume] });
    if (c.volumeMounts) ops.push({ op: 'add', path: `${base}/volumeMounts/-`, value: mount });
    else ops.push({ op: 'add', path: `${base}/volumeMounts`, value: [mount] });
    if (!(c.args ?? []).includes(arg)) {
      if (c.args) ops.push({ op: 'add', path: `${base}/args/-`, value: arg });
      else ops.push({ op: 'add', path: `${base}/args`, value: [arg] });
    }
    return;
  }
}

/**
 * PGHOST/PGPORT point libpq-based clients at the sidecar. Only containers that set neither name get them
 * (per name); native mode also covers init containers, which then run after the sidecar is up.
 */
function pgEnvOps(pod: PodLike, port: number, native: boolean, ops: JsonPatchOp[]): void {
  const lists: [string, V1Container[] | undefined][] = [['containers', pod.spec?.containers]];
  if (native) lists.push(['initContainers', pod.spec?.initContainers]);
  for (const [field, containers] of lists) {
    (containers ?? []).forEach((c, i) => {
      if (!c || c.name === SIDECAR_NAME) return;
      const have = new Set((c.env ?? []).map((e) => e?.name));
      const add = [
        { name: 'PGHOST', value: '127.0.0.1' },
        { name: 'PGPORT', value: String(port) },
      ].filter((e) => !have.has(e.name));
      if (add.length === 0) return;
      if (!c.env) ops.push({ op: 'add', path: `/spec/${field}/${i}/env`, value: add });
      else for (const e of add) ops.push({ op: 'add', path: `/spec/${field}/${i}/env/-`, value: e });
    });
  }
}
