/**
 * The webhook configurations for ApprovalRequests. `failurePolicy: Fail`: with the operator down,
 * nobody can decide (a decision would go unrecorded), and held statements simply time out.
 * Status writes (`approvalrequests/status`) are not sent: they cannot approve anything.
 */
import { OPERATOR_PORT, OPERATOR_SERVICE } from '../inject/constants.js';
import { CA_BUNDLE_LABEL, CA_BUNDLE_LABEL_VALUE } from '../inject/webhook-config.js';
import { APPROVAL_MUTATE_PATH, APPROVAL_VALIDATE_PATH } from './webhook.js';

export const APPROVAL_WEBHOOK_CONFIG_NAME = 'dbguard-approvals';
export const APPROVAL_MUTATING_WEBHOOK = 'stamp.approvals.dbguard.io';
export const APPROVAL_VALIDATING_WEBHOOK = 'validate.approvals.dbguard.io';

export interface ApprovalWebhookConfigOptions {
  operatorNamespace: string;
  caBundlePem?: string;
  timeoutSeconds?: number;
  /** for cert-manager's `cert-manager.io/inject-ca-from` */
  certManagerCertificate?: string;
}

function config(kind: 'Mutating' | 'Validating', o: ApprovalWebhookConfigOptions) {
  const path = kind === 'Mutating' ? APPROVAL_MUTATE_PATH : APPROVAL_VALIDATE_PATH;
  const webhook: Record<string, unknown> = {
    name: kind === 'Mutating' ? APPROVAL_MUTATING_WEBHOOK : APPROVAL_VALIDATING_WEBHOOK,
    admissionReviewVersions: ['v1'],
    sideEffects: 'None',
    failurePolicy: 'Fail',
    matchPolicy: 'Equivalent',
    timeoutSeconds: o.timeoutSeconds ?? 10,
    clientConfig: {
      service: { namespace: o.operatorNamespace, name: OPERATOR_SERVICE, path, port: OPERATOR_PORT },
      ...(o.caBundlePem ? { caBundle: Buffer.from(o.caBundlePem).toString('base64') } : {}),
    },
    rules: [
      {
        operations: ['CREATE', 'UPDATE'],
        apiGroups: ['dbguard.io'],
        apiVersions: ['v1alpha1'],
        resources: ['approvalrequests'],
        scope: 'Namespaced',
      },
    ],
  };
  // the decision must be stamped last, after any other mutating webhook changed the object
  if (kind === 'Mutating') webhook.reinvocationPolicy = 'IfNeeded';
  return {
    apiVersion: 'admissionregistration.k8s.io/v1',
    kind: `${kind}WebhookConfiguration`,
    metadata: {
      name: APPROVAL_WEBHOOK_CONFIG_NAME,
      labels: {
        'app.kubernetes.io/name': 'dbguard',
        'app.kubernetes.io/component': 'approvals',
        ...(o.certManagerCertificate ? {} : { [CA_BUNDLE_LABEL]: CA_BUNDLE_LABEL_VALUE }),
      },
      ...(o.certManagerCertificate
        ? { annotations: { 'cert-manager.io/inject-ca-from': o.certManagerCertificate } }
        : {}),
    },
    webhooks: [webhook],
  };
}

export function approvalMutatingWebhookConfiguration(o: ApprovalWebhookConfigOptions) {
  return config('Mutating', o);
}

export function approvalValidatingWebhookConfiguration(o: ApprovalWebhookConfigOptions) {
  return config('Validating', o);
}
