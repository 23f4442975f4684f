/** `dbguard operator`: the controller, policy server, webhooks and leader election (contract §3). */
import * as k8s from '@kubernetes/client-node';
import { type FlagSpec, helpText, parseFlags } from './flags.js';

const FLAGS: FlagSpec[] = [
  { name: 'webhook-listen', default: '0.0.0.0:8443', help: 'HTTPS listener for webhooks and the policy API (/v1/policies)' },
  { name: 'metrics-listen', default: '0.0.0.0:9090', help: '/metrics, /healthz, /readyz' },
  { name: 'leader-elect', boolean: true, help: 'elect a leader with a Lease; only the leader writes status and objects' },
  { name: 'namespace', default: 'dbguard-system', help: "the operator's own namespace (Lease, certificates)" },
  { name: 'tls-cert', help: 'serving certificate (PEM) for the webhook/policy listener; without it, plain HTTP' },
  { name: 'tls-key', help: 'private key (PEM) for --tls-cert' },
  { name: 'kubeconfig', help: 'kubeconfig file (default: in-cluster, then $KUBECONFIG, then ~/.kube/config)' },
  { name: 'help', boolean: true, help: 'show this help' },
];

export async function run(argv: string[]): Promise<number> {
  const flags = parseFlags(argv, FLAGS);
  if (flags.has('help')) {
    process.stdout.write(`${helpText('operator', 'Watch DatabasePolicy and MaskingRule resources, compile and serve policies.', FLAGS)}\n`);
    return 0;
  }
  const { runOperator, readTls } = await import('../operator/operator.js');
  const kc = new k8s.KubeConfig();
  const file = flags.get('kubeconfig');
  if (file) kc.loadFromFile(file);
  else kc.loadFromDefault();
  const op = await runOperator({
    kubeConfig: kc,
    listen: flags.get('webhook-listen')!,
    metricsListen: flags.get('metrics-listen'),
    leaderElect: flags.has('leader-elect'),
    namespace: flags.get('namespace'),
    identity: process.env.POD_NAME ?? process.env.DBGUARD_POD_NAME,
    tls: readTls(flags.get('tls-cert'), flags.get('tls-key')),
  });
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
  await op.close();
  return 0;
}
