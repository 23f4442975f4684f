/**
 * Names shared by the injection webhook, `dbguard inject`, the docs and the tests: the contract's label and
 * annotations (§4) plus the names of what is added to a pod. Changing one changes what users see.
 */

/** label on the pod (template) that opts a workload in; the webhook's objectSelector matches it */
export const INJECT_LABEL = 'dbguard.io/inject';
/** annotation naming the DatabasePolicy in the pod's namespace */
export const POLICY_ANNOTATION = 'dbguard.io/policy';
/** annotation with the proxy's port inside the pod (default 5432) */
export const PORT_ANNOTATION = 'dbguard.io/port';
/** annotation with the sidecar's metrics/health port (default 9090); an extension of the contract */
export const METRICS_PORT_ANNOTATION = 'dbguard.io/metrics-port';
/** annotation set to `injected` on an injected pod */
export const STATUS_ANNOTATION = 'dbguard.io/status';
export const STATUS_INJECTED = 'injected';
/** `"false"` keeps PGHOST/PGPORT off the app containers; an extension of the contract */
export const PG_ENV_ANNOTATION = 'dbguard.io/pg-env';
/**
 * PEM of the CA(s) the sidecar trusts for the operator's HTTPS endpoint. The webhook writes it and the
 * sidecar reads it through a downward API file, so no per-namespace ConfigMap has to be published.
 */
export const OPERATOR_CA_ANNOTATION = 'dbguard.io/operator-ca';

export const SIDECAR_NAME = 'dbguard-proxy';
export const VOLUME_OPERATOR = 'dbguard-operator';
export const VOLUME_CACHE = 'dbguard-cache';
export const VOLUME_CREDENTIALS = 'dbguard-credentials';
export const OPERATOR_DIR = '/var/run/secrets/dbguard.io/operator';
export const CACHE_DIR = '/var/lib/dbguard';
export const CREDENTIALS_DIR = '/var/run/secrets/dbguard.io/credentials';
/** audience of the projected ServiceAccount token the sidecar shows the operator */
export const TOKEN_AUDIENCE = 'dbguard';

export const DEFAULT_PROXY_PORT = 5432;
export const DEFAULT_METRICS_PORT = 9090;
export const METRICS_PORT_NAME = 'dbguard-metrics';
/** the image's entrypoint is `dbguard`; the injected container passes `proxy ...` as args */
export const DEFAULT_SIDECAR_IMAGE = 'ghcr.io/dbguard/dbguard:v0.1.0';
/** the operator's Service; the sidecar pulls policies from it and the API server calls the webhook on it */
export const OPERATOR_SERVICE = 'dbguard-operator';
export const OPERATOR_PORT = 8443;
export const DEFAULT_OPERATOR_NAMESPACE = 'dbguard-system';
export const WEBHOOK_PATH = '/inject';
export const WEBHOOK_CONFIG_NAME = 'dbguard-sidecar-injector';
export const WEBHOOK_NAME = 'inject.dbguard.io';
/** uid/gid the sidecar runs as (the distroless "nonroot" user) */
export const SIDECAR_UID = 65532;

export function defaultOperatorUrl(operatorNamespace: string = DEFAULT_OPERATOR_NAMESPACE): string {
  return `https://${OPERATOR_SERVICE}.${operatorNamespace}.svc:${OPERATOR_PORT}`;
}
