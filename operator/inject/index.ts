/**
 * Sidecar injection for the operator: `injectionRoutes(...)` mounts the webhook on the operator's HTTPS
 * listener (`runOperator({ routes })`), wired to the operator's store, metrics, Events and certificates.
 */
import type express from 'express';
import { EventRecorder } from '../events.js';
import type { OperatorContext } from '../operator.js';
import { NativeSidecarDetector, type NativeSidecarSetting } from './cluster.js';
import { DEFAULT_SIDECAR_IMAGE, defaultOperatorUrl } from './constants.js';
import type { InjectOptions } from './inject.js';
import { clusterPolicyLookup } from './policy-lookup.js';
import { injectionWebhook } from './webhook.js';

export * from './constants.js';
export {
  type InjectionResult,
  type InjectOptions,
  injectPod,
  type PodLike,
  type PolicyInfo,
} from './inject.js';
export { injectManifests } from './manifests.js';
export { reviewPod } from './webhook.js';
export { injectionWebhookConfiguration } from './webhook-config.js';

export interface InjectionRoutesOptions {
  operatorNamespace: string;
  image?: string;
  imagePullPolicy?: string;
  nativeSidecar?: NativeSidecarSetting;
  /** default https://dbguard-operator.<operatorNamespace>.svc:8443 */
  operatorUrl?: string;
  excludedNamespaces?: string[];
  log?: (f: Record<string, unknown>) => void;
}

export function injectionRoutes(
  o: InjectionRoutesOptions,
): (app: express.Express, ctx: OperatorContext) => void {
  return (app, ctx) => {
    const detector = new NativeSidecarDetector(o.nativeSidecar ?? 'auto', ctx.kubeConfig, o.log);
    const detected = detector.start();
    const base = {
      image: o.image ?? DEFAULT_SIDECAR_IMAGE,
      imagePullPolicy: o.imagePullPolicy,
      operatorUrl: o.operatorUrl ?? defaultOperatorUrl(o.operatorNamespace),
    };
    app.use(
      injectionWebhook({
        injectOptions: async (): Promise<InjectOptions> => {
          await detected;
          return {
            ...base,
            nativeSidecar: detector.native,
            operatorCaPem: ctx.tls?.current()?.caBundle || undefined,
          };
        },
        lookup: clusterPolicyLookup(ctx.kubeConfig, ctx.store, o.log),
        operatorNamespace: o.operatorNamespace,
        excludedNamespaces: o.excludedNamespaces,
        metrics: ctx.metrics,
        events: new EventRecorder(ctx.kubeConfig, 'dbguard-injector', o.log),
        log: o.log,
      }),
    );
  };
}
