/**
 * The MutatingWebhookConfiguration for pod injection. Its selectors are what keeps an operator outage
 * contained: only pods labelled dbguard.io/inject=true are ever sent to the webhook, never pods in
 * kube-system or the operator's own namespace (so the operator can always restart itself), and for
 * exactly those pods `failurePolicy: Fail` means "not governed, not started".
 */
import {
  INJECT_LABEL,
  OPERATOR_PORT,
  OPERATOR_SERVICE,
  WEBHOOK_CONFIG_NAME,
  WEBHOOK_NAME,
  WEBHOOK_PATH,
} from './constants.js';

/** label on webhook configurations whose caBundle the operator keeps current (self-managed certificates) */
export const CA_BUNDLE_LABEL = 'dbguard.io/webhook-ca';
export const CA_BUNDLE_LABEL_VALUE = 'operator';

export interface WebhookConfigOptions {
  operatorNamespace: string;
  /** PEM; omitted when cert-manager's CA injector fills it */
  caBundlePem?: string;
  failurePolicy?: 'Fail' | 'Ignore';
  timeoutSeconds?: number;
  /** namespaces never injected, besides kube-system and the operator's */
  excludedNamespaces?: string[];
  /** `namespace/certificate` for cert-manager's `cert-manager.io/inject-ca-from` */
  certManagerCertificate?: string;
}

export function excludedNamespaces(operatorNamespace: string, extra: string[] = []): string[] {
  return [...new Set(['kube-system', operatorNamespace, ...extra])];
}

export function injectionWebhookConfiguration(o: WebhookConfigOptions) {
  const annotations = o.certManagerCertificate
    ? { 'cert-manager.io/inject-ca-from': o.certManagerCertificate }
    : undefined;
  return {
    apiVersion: 'admissionregistration.k8s.io/v1',
    kind: 'MutatingWebhookConfiguration',
    metadata: {
      name: WEBHOOK_CONFIG_NAME,
      labels: {
        'app.kubernetes.io/name': 'dbguard',
        'app.kubernetes.io/component': 'sidecar-injector',
        ...(o.certManagerCertificate ? {} : { [CA_BUNDLE_LABEL]: CA_BUNDLE_LABEL_VALUE }),
      },
      ...(annotations ? { annotations } : {}),
    },
    webhooks: [
      {
        name: WEBHOOK_NAME,
        admissionReviewVersions: ['v1'],
        // Events are written, but not for dryRun requests
        sideEffects: 'NoneOnDryRun',
        failurePolicy: o.failurePolicy ?? 'Fail',
        // another webhook may add containers after us: we are re-run and fill in what they lack
        reinvocationPolicy: 'IfNeeded',
        matchPolicy: 'Equivalent',
        timeoutSeconds: o.timeoutSeconds ?? 10,
        clientConfig: {
          service: {
            namespace: o.operatorNamespace,
            name: OPERATOR_SERVICE,
            path: WEBHOOK_PATH,
            port: OPERATOR_PORT,
          },
          ...(o.caBundlePem ? { caBundle: Buffer.from(o.caBundlePem).toString('base64') } : {}),
        },
        rules: [
          {
            operations: ['CREATE'],
            apiGroups: [''],
            apiVersions: ['v1'],
            resources: ['pods'],
            scope: 'Namespaced',
          },
        ],
        objectSelector: { matchExpressions: [{ key: INJECT_LABEL, operator: 'In', values: ['true'] }] },
        namespaceSelector: {
          matchExpressions: [
            {
              key: 'kubernetes.io/metadata.name',
              operator: 'NotIn',
              values: excludedNamespaces(o.operatorNamespace, o.excludedNamespaces),
            },
          ],
        },
      },
    ],
  };
}
