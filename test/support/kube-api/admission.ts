/**
 * Admission webhooks, called the way kube-apiserver calls them: an AdmissionReview v1 POSTed over HTTPS,
 * the server certificate checked against `clientConfig.caBundle`, JSONPatch responses applied in order,
 * `allowed: false` turned into an error, warnings passed on, `failurePolicy` and `timeoutSeconds` honoured.
 *
 * Not done: `matchConditions` (CEL) are not evaluated (a matching webhook is always called),
 * `reinvocationPolicy: IfNeeded` does not re-run webhooks, `matchPolicy: Equivalent` does not map versions.
 */
import { randomUUID } from 'node:crypto';
import { request as httpsRequest } from 'node:https';
import { ApiError } from './errors.js';
import { applyJsonPatch } from './patch.js';
import { type LabelSelectorObject, matchesLabels, selectorFromObject } from './selectors.js';
import type { KubeObject, ResourceType, UserInfo } from './types.js';

export type Operation = 'CREATE' | 'UPDATE' | 'DELETE' | 'CONNECT';

/** Maps a webhook's `clientConfig.service` to where the test's webhook server listens. */
export type ServiceResolver = (
  namespace: string,
  name: string,
  port: number,
) => { host: string; port: number } | undefined;

export interface AdmissionAttributes {
  operation: Operation;
  type: ResourceType;
  version: string;
  subresource?: string;
  namespace?: string;
  name: string;
  object?: KubeObject;
  oldObject?: KubeObject;
  user: UserInfo;
  dryRun: boolean;
  /** labels of the object's namespace, for namespaceSelector */
  namespaceLabels?: Record<string, string>;
}

interface Rule {
  operations?: string[];
  apiGroups?: string[];
  apiVersions?: string[];
  resources?: string[];
  scope?: string;
}

interface Webhook {
  name: string;
  clientConfig?: {
    url?: string;
    caBundle?: string;
    service?: { namespace: string; name: string; path?: string; port?: number };
  };
  rules?: Rule[];
  failurePolicy?: 'Fail' | 'Ignore';
  timeoutSeconds?: number;
  namespaceSelector?: LabelSelectorObject;
  objectSelector?: LabelSelectorObject;
}

function ruleMatches(rule: Rule, a: AdmissionAttributes): boolean {
  const has = (list: string[] | undefined, v: string) => (list ?? []).some((x) => x === '*' || x === v);
  if (!has(rule.operations, a.operation)) return false;
  if (!has(rule.apiGroups, a.type.group)) return false;
  if (!has(rule.apiVersions, a.version)) return false;
  const r = a.type.plural;
  const s = a.subresource;
  const resOk = (rule.resources ?? []).some(
    (x) =>
      x === '*/*' ||
      (!s && (x === '*' || x === r)) ||
      (s !== undefined && (x === `${r}/${s}` || x === `${r}/*` || x === `*/${s}`)),
  );
  if (!resOk) return false;
  const scope = rule.scope ?? '*';
  if (scope === 'Cluster' && a.type.namespaced) return false;
  if (scope === 'Namespaced' && !a.type.namespaced) return false;
  return true;
}

function webhookMatches(w: Webhook, a: AdmissionAttributes): boolean {
  if (!(w.rules ?? []).some((r) => ruleMatches(r, a))) return false;
  const nsSel = selectorFromObject(w.namespaceSelector);
  if (nsSel.length) {
    if (a.type.group === '' && a.type.plural === 'namespaces') {
      const labels = (a.object ?? a.oldObject)?.metadata?.labels;
      if (!matchesLabels(nsSel, labels)) return false;
    } else if (a.type.namespaced && !matchesLabels(nsSel, a.namespaceLabels)) return false;
  }
  const objSel = selectorFromObject(w.objectSelector);
  if (objSel.length) {
    const inNew = a.object ? matchesLabels(objSel, a.object.metadata?.labels) : false;
    const inOld = a.oldObject ? matchesLabels(objSel, a.oldObject.metadata?.labels) : false;
    if (!inNew && !inOld) return false;
  }
  return true;
}

export interface AdmissionResult {
  object?: KubeObject;
  warnings: string[];
}

export class AdmissionChain {
  serviceResolver: ServiceResolver = () => undefined;

  /**
   * Runs the matching webhooks of the given configurations (mutating ones may change the object).
   * The admissionregistration group itself is never sent to webhooks, as in kube-apiserver.
   */
  async run(
    kind: 'mutating' | 'validating',
    configs: KubeObject[],
    a: AdmissionAttributes,
  ): Promise<AdmissionResult> {
    const warnings: string[] = [];
    let object = a.object;
    if (a.type.group === 'admissionregistration.k8s.io') return { object, warnings };
    const sorted = [...configs].sort((x, y) =>
      (x.metadata?.name ?? '').localeCompare(y.metadata?.name ?? ''),
    );
    for (const cfg of sorted) {
      for (const w of (cfg.webhooks ?? []) as Webhook[]) {
        const attrs = { ...a, object };
        if (!webhookMatches(w, attrs)) continue;
        const out = await this.call(kind, w, attrs);
        if (!out) continue; // ignored failure
        warnings.push(...out.warnings);
        if (out.patch) {
          if (kind === 'validating') throw internal(w.name, 'validating webhooks may not return patches');
          object = applyJsonPatch(object, out.patch) as KubeObject;
        }
      }
    }
    return { object, warnings };
  }

  private async call(
    kind: 'mutating' | 'validating',
    w: Webhook,
    a: AdmissionAttributes,
  ): Promise<{ patch?: unknown; warnings: string[] } | undefined> {
    const uid = randomUUID();
    const gvk = { group: a.type.group, version: a.version, kind: a.type.kind };
    const gvr = { group: a.type.group, version: a.version, resource: a.type.plural };
    const review = {
      apiVersion: 'admission.k8s.io/v1',
      kind: 'AdmissionReview',
      request: {
        uid,
        kind: gvk,
        resource: gvr,
        ...(a.subresource ? { subResource: a.subresource, requestSubResource: a.subresource } : {}),
        requestKind: gvk,
        requestResource: gvr,
        name: a.name,
        ...(a.namespace ? { namespace: a.namespace } : {}),
        operation: a.operation,
        userInfo: a.user,
        object: a.object ?? null,
        oldObject: a.oldObject ?? null,
        dryRun: a.dryRun,
        options: {
          apiVersion: 'meta.k8s.io/v1',
          kind:
            a.operation === 'CREATE'
              ? 'CreateOptions'
              : a.operation === 'UPDATE'
                ? 'UpdateOptions'
                : 'DeleteOptions',
        },
      },
    };
    const failurePolicy = w.failurePolicy ?? 'Fail';
    let response: any;
    try {
      const body = await this.post(w, JSON.stringify(review));
      response = body?.response;
      if (!response || typeof response !== 'object') throw new Error('the response has no "response" field');
      if (response.uid !== uid) throw new Error(`expected response.uid="${uid}", got "${response.uid}"`);
    } catch (err) {
      if (failurePolicy === 'Ignore') return undefined;
      throw internal(w.name, (err as Error).message);
    }
    const warnings = Array.isArray(response.warnings) ? response.warnings.map(String) : [];
    if (response.allowed !== true) {
      const st = response.status ?? {};
      const code = typeof st.code === 'number' && st.code >= 400 ? st.code : 403;
      const why = st.message ? `: ${st.message}` : ' without explanation';
      throw new ApiError(
        code,
        st.reason || 'Forbidden',
        `admission webhook "${w.name}" denied the request${why}`,
      );
    }
    if (kind === 'mutating' && response.patch) {
      if (response.patchType !== 'JSONPatch') {
        if (failurePolicy === 'Ignore') return { warnings };
        throw internal(w.name, `unsupported patchType "${response.patchType}"`);
      }
      let ops: unknown;
      try {
        ops = JSON.parse(Buffer.from(String(response.patch), 'base64').toString('utf8'));
      } catch (err) {
        if (failurePolicy === 'Ignore') return { warnings };
        throw internal(w.name, `the patch is not base64 JSON: ${(err as Error).message}`);
      }
      return { patch: ops, warnings };
    }
    if (kind === 'validating' && response.patch) return { patch: response.patch, warnings };
    return { warnings };
  }

  private post(w: Webhook, body: string): Promise<any> {
    const cc = w.clientConfig ?? {};
    let host: string;
    let port: number;
    let path: string;
    let servername: string;
    let shown: string;
    if (cc.url) {
      const u = new URL(cc.url);
      if (u.protocol !== 'https:') return Promise.reject(new Error(`webhook URL must use https: ${cc.url}`));
      host = u.hostname.replace(/^\[|\]$/g, '');
      port = Number(u.port || 443);
      path = `${u.pathname}${u.search}`;
      servername = host;
      shown = cc.url;
    } else if (cc.service) {
      const s = cc.service;
      const target = this.serviceResolver(s.namespace, s.name, s.port ?? 443);
      shown = `https://${s.name}.${s.namespace}.svc:${s.port ?? 443}${s.path ?? '/'}`;
      if (!target)
        return Promise.reject(
          new Error(`Post "${shown}": service "${s.namespace}/${s.name}" is not mapped (setServiceResolver)`),
        );
      host = target.host;
      port = target.port;
      path = s.path ?? '/';
      servername = `${s.name}.${s.namespace}.svc`;
    } else return Promise.reject(new Error('clientConfig has neither url nor service'));
    const ca = cc.caBundle ? Buffer.from(cc.caBundle, 'base64').toString('utf8') : undefined;
    const timeoutMs = Math.min(Math.max(w.timeoutSeconds ?? 10, 1), 30) * 1000;
    return new Promise((resolve, reject) => {
      const req = httpsRequest(
        {
          host,
          port,
          path: `${path}${path.includes('?') ? '&' : '?'}timeout=${timeoutMs / 1000}s`,
          method: 'POST',
          servername: /^[\d.]+$|:/.test(servername) ? undefined : servername,
          ca,
          headers: {
            'Content-Type': 'application/json',
            Accept: 'application/json',
            'Content-Length': Buffer.byteLength(body),
          },
          timeout: timeoutMs,
          agent: false,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            clearTimeout(deadline);
            const text = Buffer.concat(chunks).toString('utf8');
            if ((res.statusCode ?? 0) < 200 || (res.statusCode ?? 0) >= 300)
              return reject(
                new Error(`Post "${shown}": the server responded ${res.statusCode}: ${text.slice(0, 200)}`),
              );
            try {
              resolve(JSON.parse(text));
            } catch {
              reject(new Error(`Post "${shown}": the response is not JSON`));
            }
          });
          res.on('error', reject);
        },
      );
      // a whole-request deadline: the socket timeout alone does not stop a server that trickles bytes
      const deadline = setTimeout(
        () => req.destroy(new Error(`Post "${shown}": context deadline exceeded`)),
        timeoutMs,
      );
      req.on('timeout', () => req.destroy(new Error(`Post "${shown}": context deadline exceeded`)));
      req.on('error', (err) => {
        clearTimeout(deadline);
        reject(err.message.startsWith('Post ') ? err : new Error(`Post "${shown}": ${err.message}`));
      });
      req.end(body);
    });
  }
}

const internal = (name: string, why: string) =>
  new ApiError(500, 'InternalError', `Internal error occurred: failed calling webhook "${name}": ${why}`);
