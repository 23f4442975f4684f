/**
 * The sidecar container and the volumes it needs, as plain Kubernetes JSON. Everything the proxy is told
 * comes from flags (contract §3) whose values the pod supplies through the downward API, so the same
 * spec works in any namespace and for pods whose name is only known after admission (generateName).
 */
import type { V1Container, V1ResourceRequirements, V1Volume } from '@kubernetes/client-node';
import {
  CACHE_DIR,
  CREDENTIALS_DIR,
  METRICS_PORT_NAME,
  OPERATOR_CA_ANNOTATION,
  OPERATOR_DIR,
  SIDECAR_NAME,
  SIDECAR_UID,
  TOKEN_AUDIENCE,
  VOLUME_CACHE,
  VOLUME_CREDENTIALS,
  VOLUME_OPERATOR,
} from './constants.js';

export const DEFAULT_RESOURCES: V1ResourceRequirements = {
  requests: { cpu: '50m', memory: '64Mi' },
  limits: { cpu: '1', memory: '256Mi' },
};

export interface SidecarParams {
  image: string;
  imagePullPolicy?: string;
  /** init container with restartPolicy Always (Kubernetes 1.29+) instead of a regular container */
  native: boolean;
  operatorUrl: string;
  /** DatabasePolicy name in the pod's namespace */
  policy: string;
  port: number;
  metricsPort: number;
  /** Secret with username/password, mounted into the sidecar only */
  credentialsSecret?: string;
  resources?: V1ResourceRequirements;
  /** lifetime of the projected token; the kubelet refreshes it at 80% */
  tokenExpirationSeconds?: number;
}

export const CREDENTIALS_ARG = `--upstream-credentials-file=${CREDENTIALS_DIR}`;

/** the Secret with `username`/`password`; world-readable inside the volume because the sidecar is not root */
export function credentialsVolume(secretName: string): V1Volume {
  return { name: VOLUME_CREDENTIALS, secret: { secretName, defaultMode: 0o444 } };
}

export function credentialsMount() {
  return { name: VOLUME_CREDENTIALS, mountPath: CREDENTIALS_DIR, readOnly: true };
}

export function sidecarContainer(p: SidecarParams): V1Container {
  const args = [
    'proxy',
    `--listen=127.0.0.1:${p.port}`,
    `--operator-url=${p.operatorUrl}`,
    // $(VAR) is expanded by the kubelet from this container's env (downward API below)
    `--policy=$(DBGUARD_POD_NAMESPACE)/${p.policy}`,
    `--metrics-listen=0.0.0.0:${p.metricsPort}`,
    '--identity-service-account=$(DBGUARD_POD_NAMESPACE)/$(DBGUARD_SERVICE_ACCOUNT)',
    '--identity-pod=$(DBGUARD_POD_NAME)',
    `--operator-token-file=${OPERATOR_DIR}/token`,
    `--operator-ca-file=${OPERATOR_DIR}/ca.crt`,
    `--policy-cache-file=${CACHE_DIR}/policy.json`,
  ];
  if (p.credentialsSecret) args.push(CREDENTIALS_ARG);
  const probe = (path: string, periodSeconds: number, failureThreshold: number) => ({
    httpGet: { path, port: METRICS_PORT_NAME },
    periodSeconds,
    failureThreshold,
    timeoutSeconds: 2,
  });
  const c: V1Container = {
    name: SIDECAR_NAME,
    image: p.image,
    ...(p.imagePullPolicy ? { imagePullPolicy: p.imagePullPolicy } : {}),
    args,
    env: [
      { name: 'DBGUARD_POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
      { name: 'DBGUARD_POD_NAMESPACE', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
      { name: 'DBGUARD_SERVICE_ACCOUNT', valueFrom: { fieldRef: { fieldPath: 'spec.serviceAccountName' } } },
    ],
    ports: [{ name: METRICS_PORT_NAME, containerPort: p.metricsPort, protocol: 'TCP' }],
    resources: structuredClone(p.resources ?? DEFAULT_RESOURCES),
    // process up and listening: gates the app containers' start when the sidecar is native
    startupProbe: probe('/healthz', 1, 60),
    // a policy is loaded (from the operator or the last-known-good file)
    readinessProbe: probe('/readyz', 5, 3),
    securityContext: {
      runAsNonRoot: true,
      runAsUser: SIDECAR_UID,
      runAsGroup: SIDECAR_UID,
      allowPrivilegeEscalation: false,
      privileged: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ['ALL'] },
      seccompProfile: { type: 'RuntimeDefault' },
    },
    volumeMounts: [
      { name: VOLUME_OPERATOR, mountPath: OPERATOR_DIR, readOnly: true },
      { name: VOLUME_CACHE, mountPath: CACHE_DIR },
      ...(p.credentialsSecret
        ? [{ name: VOLUME_CREDENTIALS, mountPath: CREDENTIALS_DIR, readOnly: true }]
        : []),
    ],
    terminationMessagePolicy: 'FallbackToLogsOnError',
  };
  if (p.native) c.restartPolicy = 'Always';
  return c;
}

export function sidecarVolumes(p: SidecarParams): V1Volume[] {
  const volumes: V1Volume[] = [
    {
      name: VOLUME_OPERATOR,
      projected: {
        defaultMode: 0o444,
        sources: [
          {
            serviceAccountToken: {
              audience: TOKEN_AUDIENCE,
              expirationSeconds: p.tokenExpirationSeconds ?? 3600,
              path: 'token',
            },
          },
          {
            downwardAPI: {
              items: [
                {
                  path: 'ca.crt',
                  fieldRef: { fieldPath: `metadata.annotations['${OPERATOR_CA_ANNOTATION}']` },
                },
              ],
            },
          },
        ],
      },
    },
    // the last-known-good policy survives container restarts (not pod restarts)
    { name: VOLUME_CACHE, emptyDir: { sizeLimit: '16Mi' } },
  ];
  if (p.credentialsSecret) volumes.push(credentialsVolume(p.credentialsSecret));
  return volumes;
}
