/**
 * `dbguard inject -f FILE|-`: prints the manifests with the dbguard sidecar injected into every pod template
 * labelled dbguard.io/inject=true, exactly as the operator's webhook would; other documents pass through
 * unchanged. Reports go to standard error; a refused template prints nothing and exits 1, so
 * `dbguard inject -f app.yaml | kubectl apply -f -` never applies a half-injected set.
 */
import fs from 'node:fs';
import { parseAllDocuments } from 'yaml';
import { type NativeSidecarSetting, parseNativeSidecarSetting } from '../operator/inject/cluster.js';
import {
  DEFAULT_OPERATOR_NAMESPACE,
  DEFAULT_SIDECAR_IMAGE,
  defaultOperatorUrl,
} from '../operator/inject/constants.js';
import type { InjectOptions } from '../operator/inject/inject.js';
import { injectManifests } from '../operator/inject/manifests.js';
import { documentsPolicyLookup } from '../operator/inject/policy-lookup.js';
import { type FlagSpec, helpText, parseFlags, UsageError } from './flags.js';

const FLAGS: FlagSpec[] = [
  { name: 'f', help: "manifests to inject: a file, or '-' for standard input" },
  { name: 'filename', help: 'same as -f' },
  {
    name: 'policy-file',
    repeatable: true,
    help: 'DatabasePolicy documents: warn about missing policies, mount credentials Secrets',
  },
  { name: 'sidecar-image', default: DEFAULT_SIDECAR_IMAGE, help: 'image of the dbguard sidecar' },
  { name: 'image-pull-policy', help: 'imagePullPolicy of the sidecar (default: the cluster default)' },
  {
    name: 'native-sidecar',
    default: 'true',
    help: "true: init container with restartPolicy Always (Kubernetes 1.29+); false: a regular container (auto, the operator's default, asks the cluster: not offline)",
  },
  {
    name: 'operator-namespace',
    default: DEFAULT_OPERATOR_NAMESPACE,
    help: "the operator's namespace (for the default --operator-url)",
  },
  {
    name: 'operator-url',
    help: 'policy endpoint for the sidecar (default https://dbguard-operator.<operator-namespace>.svc:8443)',
  },
  {
    name: 'operator-ca-file',
    help: "PEM CA of the operator's endpoint, embedded in the pod (the webhook fills it in otherwise)",
  },
  { name: 'namespace', help: 'namespace of documents that have none (for policy lookups)' },
  { name: 'help', boolean: true, help: 'show this help' },
];

export interface InjectIo {
  stdin: () => string;
  stdout: (s: string) => void;
  stderr: (s: string) => void;
}

const processIo: InjectIo = {
  stdin: () => fs.readFileSync(0, 'utf8'),
  stdout: (s) => process.stdout.write(s),
  stderr: (s) => process.stderr.write(s),
};

export async function run(argv: string[], io: InjectIo = processIo): Promise<number> {
  const flags = parseFlags(argv, FLAGS);
  if (flags.has('help')) {
    io.stdout(
      `${helpText('inject', 'Print manifests with the dbguard sidecar injected into labelled pod templates.', FLAGS)}\n`,
    );
    return 0;
  }
  const input = flags.get('f') ?? flags.get('filename') ?? flags.positionals[0];
  if (!input) throw new UsageError('inject needs -f FILE (or -f - for standard input)');
  let native: NativeSidecarSetting;
  try {
    native = parseNativeSidecarSetting(flags.get('native-sidecar'));
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (native === 'auto') throw new UsageError('--native-sidecar must be true or false for offline injection');

  const readText = (name: string) => {
    try {
      return name === '-' ? io.stdin() : fs.readFileSync(name, 'utf8');
    } catch (err) {
      throw new UsageError(`cannot read ${name}: ${(err as Error).message}`);
    }
  };
  const text = readText(input);
  const caFile = flags.get('operator-ca-file');
  const opts: InjectOptions = {
    image: flags.get('sidecar-image')!,
    imagePullPolicy: flags.get('image-pull-policy'),
    nativeSidecar: native === 'true',
    operatorUrl: flags.get('operator-url') ?? defaultOperatorUrl(flags.get('operator-namespace')),
    operatorCaPem: caFile ? readText(caFile) : undefined,
  };

  // policies from --policy-file and any DatabasePolicy among the manifests themselves
  const policyDocs: unknown[] = [];
  const policyFiles = flags.all('policy-file');
  for (const name of [...policyFiles, input]) {
    for (const d of parseAllDocuments(name === input ? text : readText(name)) as any[]) {
      if (d.errors?.length) continue;
      policyDocs.push(d.toJS());
    }
  }
  const lookup = documentsPolicyLookup(policyDocs);
  const anyPolicyKnown = policyFiles.length > 0 || policyDocs.some((d: any) => d?.kind === 'DatabasePolicy');
  const result = injectManifests(text, opts, {
    namespace: flags.get('namespace'),
    // without any policy document, nothing can be said about policies: no warnings, no credentials
    lookup: anyPolicyKnown ? lookup : undefined,
  });

  for (const r of result.reports) {
    const what = `${r.kind.toLowerCase()} "${r.name}"`;
    if (r.outcome === 'injected') io.stderr(`${what} injected\n`);
    else if (r.outcome === 'skipped') io.stderr(`${what} skipped: ${r.message}\n`);
    for (const w of r.warnings) io.stderr(`warning: ${what}: ${w}\n`);
  }
  if (result.errors.length) {
    for (const e of result.errors) io.stderr(`error: ${e}\n`);
    io.stderr('dbguard inject: nothing printed because of the errors above\n');
    return 1;
  }
  io.stdout(result.output);
  return 0;
}
