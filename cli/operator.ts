/** `dbguard operator`: the controller, policy server, webhooks and leader election (contract §3). */
import * as k8s from '@kubernetes/client-node';
import { parsePositiveDuration } from '../policy/duration.js';
import { CliError } from './errors.js';
import { type FlagSpec, helpText, parseFlags, UsageError } from './flags.js';

const FLAGS: FlagSpec[] = [
  {
    name: 'webhook-listen',
    default: '0.0.0.0:8443',
    help: 'HTTPS listener for webhooks and the policy API (/v1/policies)',
  },
  { name: 'metrics-listen', default: '0.0.0.0:9090', help: '/metrics, /healthz, /readyz' },
  {
    name: 'leader-elect',
    boolean: true,
    help: 'elect a leader with a Lease; only the leader writes status and objects',
  },
  {
    name: 'namespace',
    default: 'dbguard-system',
    help: "the operator's own namespace (Lease, certificates)",
  },
  {
    name: 'tls-cert',
    help: 'serving certificate (PEM) for the webhook/policy listener, e.g. from cert-manager (implies --webhook-certs files)',
  },
  { name: 'tls-key', help: 'private key (PEM) for --tls-cert' },
  {
    name: 'tls-ca',
    help: 'PEM CA that sidecars trust for the listener (cert-manager: ca.crt next to tls.crt)',
  },
  {
    name: 'webhook-certs',
    help: 'self-managed (own CA in a Secret, caBundle patched, renewed) | files (--tls-cert/--tls-key, reloaded) | none (plain HTTP, development)',
  },
  {
    name: 'webhook-cert-validity',
    default: '8760h',
    help: 'self-managed: lifetime of the serving certificate (renewed when a third is left)',
  },
  { name: 'webhook-ca-validity', default: '43800h', help: 'self-managed: lifetime of the CA' },
  {
    name: 'manage-webhook-config',
    default: 'true',
    help: 'create the MutatingWebhookConfiguration for injection when missing (self-managed)',
  },
  {
    name: 'webhook-failure-policy',
    default: 'Fail',
    help: 'failurePolicy of a created webhook configuration: Fail | Ignore',
  },
  { name: 'sidecar-image', help: 'image of the injected dbguard sidecar' },
  { name: 'native-sidecar', default: 'auto', help: 'auto (Kubernetes 1.29+ from /version) | true | false' },
  {
    name: 'kubeconfig',
    help: 'kubeconfig file (default: in-cluster, then $KUBECONFIG, then ~/.kube/config)',
  },
  {
    name: 'approval-notify-url',
    help: 'POST Slack-compatible JSON here on new approval requests and decisions',
  },
  {
    name: 'approval-retention',
    default: '24h',
    help: 'delete decided or expired ApprovalRequests after this long',
  },
  {
    name: 'oidc-username-prefix',
    repeatable: true,
    help: "the API server's --oidc-username-prefix (one per JWT issuer): removed before an approver is compared with the requester; '-' for none (default oidc:)",
  },
  { name: 'help', boolean: true, help: 'show this help' },
];

export async function run(argv: string[]): Promise<number> {
  const flags = parseFlags(argv, FLAGS);
  if (flags.has('help')) {
    process.stdout.write(
      `${helpText('operator', 'Watch DatabasePolicy and MaskingRule resources, compile and serve policies.', FLAGS)}\n`,
    );
    return 0;
  }
  const { runOperator } = await import('../operator/operator.js');
  const { operatorTls } = await import('../operator/certs/index.js');
  const { injectionRoutes } = await import('../operator/inject/index.js');
  const { approvalRoutes } = await import('../operator/approvals/index.js');
  const { parseNativeSidecarSetting } = await import('../operator/inject/cluster.js');
  const kc = new k8s.KubeConfig();
  const file = flags.get('kubeconfig');
  try {
    if (file) kc.loadFromFile(file);
    else kc.loadFromDefault();
  } catch (err) {
    const where = file ?? process.env.KUBECONFIG ?? '~/.kube/config';
    throw new CliError(
      `cannot load the kubeconfig ${where}: ${(err as Error).message.split('\n')[0]}; pass --kubeconfig FILE or set KUBECONFIG (in a cluster: the pod's ServiceAccount is used)`,
    );
  }
  const namespace = flags.get('namespace')!;
  // one JSON line per event on stderr, for every part: certificates, caBundles, injection and approval
  // watches included (without it their failures were invisible in `kubectl logs`)
  const log = (f: Record<string, unknown>) =>
    process.stderr.write(`${JSON.stringify({ time: new Date().toISOString(), ...f })}\n`);
  let nativeSidecar: ReturnType<typeof parseNativeSidecarSetting>;
  let certificates: ReturnType<typeof operatorTls>;
  try {
    nativeSidecar = parseNativeSidecarSetting(flags.get('native-sidecar'));
    certificates = operatorTls({
      mode: flags.get('webhook-certs'),
      namespace,
      certFile: flags.get('tls-cert'),
      keyFile: flags.get('tls-key'),
      caFile: flags.get('tls-ca'),
      certValidity: flags.get('webhook-cert-validity'),
      caValidity: flags.get('webhook-ca-validity'),
      manageWebhookConfig: flags.has('manage-webhook-config'),
      failurePolicy: flags.get('webhook-failure-policy'),
      log,
    });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const op = await runOperator({
    kubeConfig: kc,
    listen: flags.get('webhook-listen')!,
    metricsListen: flags.get('metrics-listen'),
    leaderElect: flags.has('leader-elect'),
    namespace,
    identity: process.env.POD_NAME ?? process.env.DBGUARD_POD_NAME,
    certificates,
    log,
    routes: [
      injectionRoutes({
        log,
        operatorNamespace: namespace,
        image: flags.get('sidecar-image'),
        nativeSidecar,
      }),
      approvalRoutes({
        log,
        ...(flags.all('oidc-username-prefix').length
          ? { oidcUsernamePrefixes: flags.all('oidc-username-prefix').filter((p) => p !== '-') }
          : {}),
        notifyUrl: flags.get('approval-notify-url'),
        retentionSeconds: flags.get('approval-retention')
          ? parsePositiveDuration(flags.get('approval-retention')!)
          : undefined,
      }),
    ],
  });
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
  await op.close();
  return 0;
}
