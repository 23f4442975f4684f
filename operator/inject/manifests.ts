/**
 * `dbguard inject` over manifests: every pod template (Pod, Deployment, ReplicaSet, StatefulSet, DaemonSet,
 * Job, CronJob, ReplicationController, PodTemplate, and items of a List) that carries the inject label gets
 * exactly the webhook's patch; every other document is printed byte for byte as it came.
 *
 * Documents are split at `---` lines (a line starting with `---` always ends a YAML document), so the text
 * of an untouched document, comments included, never goes through a YAML round trip.
 */
import { parseDocument } from 'yaml';
import { type InjectOptions, injectPod, type PodLike, type PolicyInfo, policyNameOf } from './inject.js';
import { applyPatch } from './json-patch.js';

/** where the pod template sits in each workload kind */
const TEMPLATE_PATHS: Record<string, string[]> = {
  Pod: [],
  PodTemplate: ['template'],
  Deployment: ['spec', 'template'],
  ReplicaSet: ['spec', 'template'],
  StatefulSet: ['spec', 'template'],
  DaemonSet: ['spec', 'template'],
  Job: ['spec', 'template'],
  ReplicationController: ['spec', 'template'],
  CronJob: ['spec', 'jobTemplate', 'spec', 'template'],
};

export interface TemplateReport {
  document: number;
  kind: string;
  name: string;
  outcome: 'injected' | 'skipped' | 'refused';
  reason: string;
  message: string;
  warnings: string[];
}

export interface ManifestInjection {
  output: string;
  reports: TemplateReport[];
  /** refusals and unparsable documents; when not empty, the output must not be applied */
  errors: string[];
}

export interface ManifestOptions {
  /** namespace for documents without one (policy lookups and messages) */
  namespace?: string;
  lookup?: (namespace: string | undefined, name: string) => PolicyInfo | undefined;
}

interface Chunk {
  /** the `---` line (with its newline), or '' for text before the first marker */
  marker: string;
  body: string;
}

function splitDocuments(text: string): Chunk[] {
  const chunks: Chunk[] = [{ marker: '', body: '' }];
  for (const line of text.split(/(?<=\n)/)) {
    if (/^---(?:[ \t]|\r?\n|$)/.test(line)) chunks.push({ marker: line, body: '' });
    else chunks[chunks.length - 1]!.body += line;
  }
  return chunks;
}

const getIn = (obj: any, path: (string | number)[]) =>
  path.reduce((o, k) => (o == null ? undefined : o[k]), obj);

export function injectManifests(
  text: string,
  opts: InjectOptions,
  mo: ManifestOptions = {},
): ManifestInjection {
  const reports: TemplateReport[] = [];
  const errors: string[] = [];
  let output = '';
  splitDocuments(text).forEach((chunk, index) => {
    // a marker may carry content on its own line (`--- {a: 1}`): parse it with the body
    const source = chunk.marker.replace(/^---/, '') + chunk.body;
    const doc = parseDocument(source);
    if (doc.errors.length) {
      errors.push(`document ${index}: not valid YAML: ${doc.errors[0]!.message}`);
      output += chunk.marker + chunk.body;
      return;
    }
    const value = doc.toJS() as any;
    const targets: { path: (string | number)[]; kind: string; owner: any }[] = [];
    const collect = (obj: any, prefix: (string | number)[]) => {
      if (!obj || typeof obj !== 'object') return;
      if (obj.kind === 'List' && Array.isArray(obj.items)) {
        obj.items.forEach((item: any, i: number) => {
          collect(item, [...prefix, 'items', i]);
        });
        return;
      }
      const path = TEMPLATE_PATHS[obj.kind];
      if (path && getIn(obj, path)) targets.push({ path: [...prefix, ...path], kind: obj.kind, owner: obj });
    };
    collect(value, []);

    let changed = false;
    for (const t of targets) {
      const template = (t.path.length ? getIn(value, t.path) : value) as PodLike;
      const namespace = t.owner.metadata?.namespace ?? mo.namespace;
      const policyName = policyNameOf(template);
      const policy = policyName ? mo.lookup?.(namespace, policyName) : undefined;
      const r = injectPod(template, opts, policy, {
        namespace,
        ownerKind: t.kind === 'Pod' ? undefined : t.kind,
      });
      const name = `${t.owner.metadata?.name ?? '(unnamed)'}`;
      if (r.reason !== 'not-requested')
        reports.push({
          document: index,
          kind: t.kind,
          name,
          outcome: r.outcome,
          reason: r.reason,
          message: r.message,
          warnings: r.warnings,
        });
      if (r.outcome === 'refused') errors.push(`${t.kind} ${name}: ${r.message}`);
      if (r.patch.length === 0) continue;
      const injected = applyPatch(template, r.patch);
      if (t.path.length) doc.setIn(t.path, doc.createNode(injected));
      else doc.contents = doc.createNode(injected) as any;
      changed = true;
    }
    if (!changed) {
      output += chunk.marker + chunk.body;
      return;
    }
    output += (chunk.marker ? '---\n' : '') + doc.toString({ lineWidth: 0 });
  });
  return { output, reports, errors };
}
