/**
 * Chooses the operator's serving certificate source from its flags: self-managed by default, files (for
 * cert-manager or provided certificates), or none (plain HTTP for local development).
 */
import { parsePositiveDuration } from '../../policy/duration.js';
import {
  APPROVAL_WEBHOOK_CONFIG_NAME,
  approvalMutatingWebhookConfiguration,
  approvalValidatingWebhookConfiguration,
} from '../approvals/webhook-config.js';
import { OPERATOR_SERVICE, WEBHOOK_CONFIG_NAME } from '../inject/constants.js';
import {
  CA_BUNDLE_LABEL,
  CA_BUNDLE_LABEL_VALUE,
  injectionWebhookConfiguration,
} from '../inject/webhook-config.js';
import type { OperatorContext } from '../operator.js';
import { FileCertificates } from './files.js';
import { SelfManagedCertificates } from './self-managed.js';
import type { TlsSource } from './types.js';

export { FileCertificates } from './files.js';
export { DEFAULT_SECRET_NAME, SelfManagedCertificates, type SelfManagedOptions } from './self-managed.js';
export type { TlsMaterial, TlsSource } from './types.js';

export interface OperatorTlsFlags {
  /** self-managed | files | none; default: files when certFile is given, else self-managed */
  mode?: string;
  namespace: string;
  certFile?: string;
  keyFile?: string;
  caFile?: string;
  certValidity?: string;
  caValidity?: string;
  manageWebhookConfig?: boolean;
  failurePolicy?: string;
  log?: (f: Record<string, unknown>) => void;
}

/** The `certificates` option of runOperator, or undefined for plain HTTP. Throws on bad flags. */
export function operatorTls(f: OperatorTlsFlags): ((ctx: OperatorContext) => TlsSource) | undefined {
  const mode = f.mode ?? (f.certFile || f.keyFile ? 'files' : 'self-managed');
  if (mode === 'none') return undefined;
  if (mode === 'files') {
    if (!f.certFile || !f.keyFile) throw new Error('--webhook-certs files needs --tls-cert and --tls-key');
    return (ctx) =>
      new FileCertificates({
        certFile: f.certFile!,
        keyFile: f.keyFile!,
        caFile: f.caFile,
        metrics: ctx.metrics,
        log: f.log,
      });
  }
  if (mode !== 'self-managed')
    throw new Error(`--webhook-certs must be self-managed, files or none, not ${JSON.stringify(mode)}`);
  const failurePolicy = f.failurePolicy ?? 'Fail';
  if (failurePolicy !== 'Fail' && failurePolicy !== 'Ignore')
    throw new Error(`--webhook-failure-policy must be Fail or Ignore, not ${JSON.stringify(failurePolicy)}`);
  const certValidityMs = parsePositiveDuration(f.certValidity ?? '8760h') * 1000;
  const caValidityMs = parsePositiveDuration(f.caValidity ?? '43800h') * 1000;
  return (ctx) =>
    new SelfManagedCertificates({
      kubeConfig: ctx.kubeConfig,
      namespace: f.namespace,
      serviceName: OPERATOR_SERVICE,
      isLeader: ctx.isLeader,
      metrics: ctx.metrics,
      log: f.log,
      certValidityMs,
      caValidityMs,
      label: `${CA_BUNDLE_LABEL}=${CA_BUNDLE_LABEL_VALUE}`,
      webhookConfigs: [
        {
          kind: 'Mutating',
          name: WEBHOOK_CONFIG_NAME,
          create:
            f.manageWebhookConfig === false
              ? undefined
              : (caBundlePem) =>
                  injectionWebhookConfiguration({
                    operatorNamespace: f.namespace,
                    caBundlePem,
                    failurePolicy,
                  }),
        },
        // Approval decisions are recorded and checked by these two (separation of duties).
        ...(['Mutating', 'Validating'] as const).map((kind) => ({
          kind,
          name: APPROVAL_WEBHOOK_CONFIG_NAME,
          create:
            f.manageWebhookConfig === false
              ? undefined
              : (caBundlePem: string) =>
                  (kind === 'Mutating'
                    ? approvalMutatingWebhookConfiguration
                    : approvalValidatingWebhookConfiguration)({
                    operatorNamespace: f.namespace,
                    caBundlePem,
                  }),
        })),
      ],
    });
}
