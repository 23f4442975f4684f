#!/usr/bin/env node
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as k8s from '@kubernetes/client-node';
import type { ApprovalRequest } from '../api/types.js';
/**
 * `kubectl dbguard`: the approver's side of approvals (a kubectl plugin: the `kubectl-dbguard` binary
 * on PATH). It talks to the Kubernetes API with the user's kubeconfig, so the API server records the
 * user's identity on the decision and RBAC on `approvalrequests` decides who may approve.
 *
 *   kubectl dbguard list [-n NS]                      pending requests (all namespaces unless -n)
 *   kubectl dbguard approve NAME [-n NS] [--reason R]
 *   kubectl dbguard deny NAME [-n NS] [--reason R]
 *   kubectl dbguard explain NAME [-n NS]              everything about one request
 *
 * Without -n, NAME is looked up in every namespace (names carry a random suffix, so they rarely clash).
 */
import { GROUP, VERSION } from '../api/types.js';
import {
  approveCommand,
  DECIDED_AT_ANNOTATION,
  DECIDED_BY_ANNOTATION,
  denyCommand,
  effectivePhase,
  formatSeconds,
  isWithdrawn,
  MODE_ANNOTATION,
  PLURAL,
  VALID_FOR_ANNOTATION,
  validUntil,
} from '../operator/approvals/model.js';
import { readApprovalRequest } from '../operator/approvals/status.js';
import { type FlagSpec, parseFlags, UsageError } from './flags.js';

const FLAGS: FlagSpec[] = [
  { name: 'namespace', help: 'namespace of the request' },
  { name: 'n', help: 'short for --namespace' },
  { name: 'reason', help: 'why (approve, deny): a ticket or a sentence' },
  {
    name: 'kubeconfig',
    help: 'kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then in-cluster)',
  },
  { name: 'context', help: 'kubeconfig context' },
  { name: 'output', help: 'list, explain: json' },
  { name: 'o', help: 'short for --output' },
  { name: 'help', boolean: true, help: 'show this help' },
  { name: 'h', boolean: true, help: 'short for --help' },
];

const USAGE = `usage: kubectl dbguard <command> [flags]

commands:
  list                      pending approval requests (all namespaces unless -n)
  approve NAME [--reason R] approve a request (runs the held statement, or lets the retry through)
  deny NAME [--reason R]    deny a request
  explain NAME              show a request: statement, subject, rule, state, how to decide

flags:
  -n, --namespace NS        namespace of the request (default: search all namespaces)
  --reason TEXT             recorded on the request with your user name
  -o, --output json         machine-readable list/explain
  --kubeconfig FILE, --context NAME`;

export interface Io {
  out: (s: string) => void;
  err: (s: string) => void;
  /** a ready KubeConfig (tests); otherwise loaded from --kubeconfig or the defaults */
  kubeConfig?: k8s.KubeConfig;
}

const defaultIo: Io = {
  out: (s) => process.stdout.write(s),
  err: (s) => process.stderr.write(s),
};

class CliError extends Error {}

function apiMessage(err: unknown): string {
  const e = err as { code?: number; body?: unknown; message?: string };
  let body = e.body;
  if (typeof body === 'string') {
    try {
      body = JSON.parse(body);
    } catch {
      /* plain text */
    }
  }
  const msg = (body as { message?: string } | undefined)?.message;
  return msg ? `${msg}${e.code ? ` (HTTP ${e.code})` : ''}` : String(e.message ?? err);
}

function subjectText(ar: ApprovalRequest): string {
  const s = ar.spec.subject ?? {};
  return (
    [
      s.serviceAccount && `sa:${s.serviceAccount}`,
      s.user && `user:${s.user}`,
      s.databaseUser && `db:${s.databaseUser}`,
    ]
      .filter(Boolean)
      .join(' ') || '-'
  );
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return `${rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('   ')).join('\n')}\n`;
}

function clip(s: string, n: number): string {
  const one = s.replace(/\s+/g, ' ').trim();
  return one.length > n ? `${one.slice(0, n - 1)}…` : one;
}

/** Pending, Approved, Denied, Expired, or Withdrawn (an Expired request the client gave up on). */
function phaseText(ar: ApprovalRequest): string {
  const p = effectivePhase(ar);
  return p === 'Expired' && isWithdrawn(ar) ? 'Withdrawn' : p;
}

class Approvals {
  private readonly api: k8s.CustomObjectsApi;

  constructor(kc: k8s.KubeConfig) {
    this.api = kc.makeApiClient(k8s.CustomObjectsApi);
  }

  async list(namespace?: string): Promise<ApprovalRequest[]> {
    const res = (
      namespace
        ? await this.api.listNamespacedCustomObject({
            group: GROUP,
            version: VERSION,
            namespace,
            plural: PLURAL,
          })
        : await this.api.listClusterCustomObject({ group: GROUP, version: VERSION, plural: PLURAL })
    ) as { items?: ApprovalRequest[] };
    return res.items ?? [];
  }

  async find(name: string, namespace?: string): Promise<ApprovalRequest> {
    if (namespace) {
      const ar = await readApprovalRequest(this.api, namespace, name);
      if (!ar) throw new CliError(`approval request ${namespace}/${name} not found`);
      return ar;
    }
    const hits = (await this.list()).filter((a) => a.metadata.name === name);
    if (hits.length === 0) throw new CliError(`approval request ${name} not found in any namespace`);
    if (hits.length > 1)
      throw new CliError(
        `approval request ${name} exists in several namespaces (${hits.map((h) => h.metadata.namespace).join(', ')}); give -n`,
      );
    return hits[0]!;
  }

  async decide(
    ar: ApprovalRequest,
    decision: 'Approved' | 'Denied',
    reason?: string,
  ): Promise<ApprovalRequest> {
    return (await this.api.patchNamespacedCustomObject(
      {
        group: GROUP,
        version: VERSION,
        namespace: ar.metadata.namespace!,
        plural: PLURAL,
        name: ar.metadata.name,
        // resourceVersion: the decision is about exactly what the approver looked at
        body: {
          metadata: { resourceVersion: ar.metadata.resourceVersion },
          spec: { decision, ...(reason ? { reason } : {}) },
        },
      },
      k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
    )) as ApprovalRequest;
  }
}

function explain(ar: ApprovalRequest): string {
  const ns = ar.metadata.namespace ?? '';
  const phase = phaseText(ar);
  const a = ar.metadata.annotations ?? {};
  const s = ar.spec.subject ?? {};
  const lines = [
    `Name:         ${ns}/${ar.metadata.name}`,
    `Phase:        ${phase}`,
    `Policy:       ${ar.spec.policyRef?.name}   Rule: ${ar.spec.rule}   Mode: ${a[MODE_ANNOTATION] ?? '-'}`,
    `Database:     ${ar.spec.database}`,
    `Subject:      serviceAccount=${s.serviceAccount ?? '-'} pod=${s.pod ?? '-'} user=${s.user ?? '-'} groups=${(s.groups ?? []).join(',') || '-'} databaseUser=${s.databaseUser ?? '-'}`,
    `Fingerprint:  ${ar.spec.fingerprint}`,
    `Requested:    ${ar.metadata.creationTimestamp ?? '-'}`,
    `Expires:      ${ar.spec.expiresAt}`,
  ];
  if (a[VALID_FOR_ANNOTATION])
    lines.push(
      `Valid for:    ${formatSeconds(Number(a[VALID_FOR_ANNOTATION]))} after approval (Reject mode retries)`,
    );
  if (ar.spec.decision)
    lines.push(
      `Decision:     ${ar.spec.decision} by ${a[DECIDED_BY_ANNOTATION] ?? '(unrecorded)'} at ${a[DECIDED_AT_ANNOTATION] ?? '-'}`,
    );
  if (ar.spec.reason) lines.push(`Reason:       ${ar.spec.reason}`);
  const until = validUntil(ar);
  if (until)
    lines.push(`Lets through: until ${new Date(until).toISOString()}${until < Date.now() ? ' (over)' : ''}`);
  for (const c of ar.status?.conditions ?? [])
    lines.push(`Condition:    ${c.type}=${c.status} ${c.reason}: ${c.message}`);
  lines.push(
    'Statement (normalized, literals replaced by $n):',
    ...ar.spec.statement.split('\n').map((l) => `  ${l}`),
  );
  if (phase === 'Pending')
    lines.push(
      '',
      `Approve: ${approveCommand(ns, ar.metadata.name)}`,
      `Deny:    ${denyCommand(ns, ar.metadata.name)}`,
    );
  return `${lines.join('\n')}\n`;
}

export async function run(argv: string[], io: Io = defaultIo): Promise<number> {
  let flags: ReturnType<typeof parseFlags>;
  try {
    // kubectl plugins take no DBGUARD_* environment: kubectl's own conventions apply
    flags = parseFlags(argv, FLAGS, {});
  } catch (err) {
    io.err(`kubectl dbguard: ${(err as Error).message}\n\n${USAGE}\n`);
    return 2;
  }
  const [command, name, ...extra] = flags.positionals;
  if (flags.has('help') || flags.has('h') || !command || command === 'help') {
    io.out(`${USAGE}\n`);
    return command || flags.has('help') || flags.has('h') ? 0 : 2;
  }
  const namespace = flags.get('namespace') ?? flags.get('n');
  const output = flags.get('output') ?? flags.get('o');
  const usage = (msg: string) => {
    io.err(`kubectl dbguard: ${msg}\n\n${USAGE}\n`);
    return 2;
  };
  if (output && output !== 'json') return usage(`--output must be json, not ${JSON.stringify(output)}`);
  if (extra.length) return usage(`unexpected arguments: ${extra.join(' ')}`);

  let kc = io.kubeConfig;
  try {
    if (!kc) {
      kc = new k8s.KubeConfig();
      const file = flags.get('kubeconfig');
      if (file) kc.loadFromFile(file);
      else kc.loadFromDefault();
    }
    if (flags.get('context')) kc.setCurrentContext(flags.get('context')!);
  } catch (err) {
    io.err(`kubectl dbguard: cannot load the kubeconfig: ${(err as Error).message}\n`);
    return 1;
  }
  const approvals = new Approvals(kc);

  try {
    switch (command) {
      case 'list': {
        if (name) return usage('list takes no NAME');
        const pending = (await approvals.list(namespace))
          .filter((a) => effectivePhase(a) === 'Pending' && !isWithdrawn(a))
          .sort((a, b) => Date.parse(a.spec.expiresAt) - Date.parse(b.spec.expiresAt));
        if (output === 'json') {
          io.out(`${JSON.stringify({ items: pending }, null, 2)}\n`);
          return 0;
        }
        if (!pending.length) {
          io.out(`No pending approval requests${namespace ? ` in namespace ${namespace}` : ''}.\n`);
          return 0;
        }
        const now = Date.now();
        io.out(
          table([
            ['NAMESPACE', 'NAME', 'POLICY', 'RULE', 'SUBJECT', 'EXPIRES IN', 'STATEMENT'],
            ...pending.map((a) => [
              a.metadata.namespace ?? '',
              a.metadata.name,
              a.spec.policyRef?.name ?? '',
              a.spec.rule,
              subjectText(a),
              formatSeconds((Date.parse(a.spec.expiresAt) - now) / 1000),
              clip(a.spec.statement, 60),
            ]),
          ]),
        );
        return 0;
      }
      case 'approve':
      case 'deny': {
        if (!name) return usage(`${command} needs the request's NAME`);
        const ar = await approvals.find(name, namespace);
        const phase = phaseText(ar);
        if (phase !== 'Pending')
          throw new CliError(
            `approval request ${ar.metadata.namespace}/${name} is ${phase}; nothing to decide`,
          );
        const decided = await approvals.decide(
          ar,
          command === 'approve' ? 'Approved' : 'Denied',
          flags.get('reason'),
        );
        const by = decided.metadata.annotations?.[DECIDED_BY_ANNOTATION];
        io.out(
          `approval request ${decided.metadata.namespace}/${name} ${command === 'approve' ? 'approved' : 'denied'}${by ? ` by ${by}` : ''}\n`,
        );
        return 0;
      }
      case 'explain': {
        if (!name) return usage("explain needs the request's NAME");
        const ar = await approvals.find(name, namespace);
        io.out(output === 'json' ? `${JSON.stringify(ar, null, 2)}\n` : explain(ar));
        return 0;
      }
      default:
        return usage(`unknown command ${JSON.stringify(command)}`);
    }
  } catch (err) {
    if (err instanceof CliError || err instanceof UsageError) {
      io.err(`kubectl dbguard: ${err.message}\n`);
      return 1;
    }
    io.err(`kubectl dbguard: ${apiMessage(err)}\n`);
    return 1;
  }
}

function isMain(): boolean {
  try {
    return (
      !!process.argv[1] && realpathSync(process.argv[1]) === realpathSync(fileURLToPath(import.meta.url))
    );
  } catch {
    return false;
  }
}

if (isMain()) {
  run(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      // One line for the user; the stack only when asked for (a bug report).
      const message = err instanceof Error ? err.message : String(err);
      const stack = process.env.DBGUARD_DEBUG && err instanceof Error ? `\n${err.stack}` : '';
      process.stderr.write(`kubectl dbguard: ${message.split('\n')[0]}${stack}\n`);
      process.exitCode = 1;
    },
  );
}
