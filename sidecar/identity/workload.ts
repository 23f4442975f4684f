/**
 * Which workload the sidecar speaks for: its ServiceAccount (`namespace/name`) and pod name, the
 * facts `ServiceAccount` subjects match and audit events carry.
 *
 * Sources, first found wins:
 * 1. the flags `--identity-service-account NS/NAME` and `--identity-pod NAME` (or their
 *    `DBGUARD_IDENTITY_SERVICE_ACCOUNT` / `DBGUARD_IDENTITY_POD` variables, as cli/flags.ts reads them);
 * 2. the variables the injector sets from the downward API:
 *    `DBGUARD_SERVICE_ACCOUNT` (spec.serviceAccountName; `NS/NAME` also accepted),
 *    `DBGUARD_POD_NAMESPACE` (metadata.namespace), `DBGUARD_POD_NAME` (metadata.name).
 */
import type { Identity } from '../../policy/identity.js';

export const ENV_POD_NAME = 'DBGUARD_POD_NAME';
export const ENV_POD_NAMESPACE = 'DBGUARD_POD_NAMESPACE';
export const ENV_SERVICE_ACCOUNT = 'DBGUARD_SERVICE_ACCOUNT';

export class IdentityConfigError extends Error {
  override name = 'IdentityConfigError';
}

export interface WorkloadFlags {
  /** `--identity-service-account` */
  serviceAccount?: string;
  /** `--identity-pod` */
  pod?: string;
}

export type WorkloadIdentity = Pick<Identity, 'serviceAccount' | 'pod'>;

/** DNS-1123 subdomain (ServiceAccount and pod names) and label (namespaces). */
const SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

function checkName(what: string, value: string, re: RegExp, max: number): string {
  if (value.length > max || !re.test(value)) {
    throw new IdentityConfigError(`${what} '${value}' is not a valid Kubernetes name`);
  }
  return value;
}

function serviceAccountRef(value: string, source: string): string {
  const parts = value.split('/');
  if (parts.length !== 2) throw new IdentityConfigError(`${source}: expected NAMESPACE/NAME, got '${value}'`);
  const [ns, name] = parts as [string, string];
  return `${checkName(`${source}: namespace`, ns, LABEL, 63)}/${checkName(`${source}: name`, name, SUBDOMAIN, 253)}`;
}

export function workloadIdentity(
  flags: WorkloadFlags,
  env: NodeJS.ProcessEnv = process.env,
): WorkloadIdentity {
  const out: WorkloadIdentity = {};
  const flagSa = flags.serviceAccount?.trim();
  const envSa = env[ENV_SERVICE_ACCOUNT]?.trim();
  const envNs = env[ENV_POD_NAMESPACE]?.trim();
  if (flagSa) {
    out.serviceAccount = serviceAccountRef(flagSa, '--identity-service-account');
  } else if (envSa) {
    if (envSa.includes('/')) out.serviceAccount = serviceAccountRef(envSa, ENV_SERVICE_ACCOUNT);
    else if (envNs)
      out.serviceAccount = serviceAccountRef(
        `${envNs}/${envSa}`,
        `${ENV_POD_NAMESPACE}/${ENV_SERVICE_ACCOUNT}`,
      );
    else
      throw new IdentityConfigError(
        `${ENV_SERVICE_ACCOUNT} is set but ${ENV_POD_NAMESPACE} is not: cannot tell the ServiceAccount's namespace`,
      );
  }
  const pod = flags.pod?.trim() || env[ENV_POD_NAME]?.trim();
  if (pod) out.pod = checkName(flags.pod?.trim() ? '--identity-pod' : ENV_POD_NAME, pod, SUBDOMAIN, 253);
  return out;
}
