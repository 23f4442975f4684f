/**
 * Approvals for the operator: `approvalRoutes(...)` mounts the sidecar API and both admission webhooks
 * on the operator's API listener (`runOperator({ routes })`) and runs the lifecycle controller (leader
 * only). It returns a closer that runOperator calls on shutdown.
 */
import type express from 'express';
import { EventRecorder } from '../events.js';
import type { OperatorContext, RoutesCloser } from '../operator.js';
import { tokenReviewAuthenticator } from '../sidecar-auth.js';
import { approvalRouter } from './api.js';
import { ApprovalCache } from './cache.js';
import { ApprovalLifecycle } from './lifecycle.js';
import { webhookNotifier } from './notify.js';
import { ApprovalWriter } from './status.js';
import { approvalWebhookRouter } from './webhook.js';

export { type CreateApprovalBody, MAX_APPROVAL_WAIT_SECONDS } from './api.js';
export * from './model.js';
export { type SlackMessage, slackMessage } from './notify.js';
export { desiredStatus } from './status.js';
export {
  APPROVAL_MUTATE_PATH,
  APPROVAL_VALIDATE_PATH,
  mutateApproval,
  validateApproval,
} from './webhook.js';
export {
  APPROVAL_WEBHOOK_CONFIG_NAME,
  approvalMutatingWebhookConfiguration,
  approvalValidatingWebhookConfiguration,
} from './webhook-config.js';

export interface ApprovalRoutesOptions {
  /** POST Slack-compatible JSON here on new requests and final states */
  notifyUrl?: string;
  /** delete final requests after this long (default 24 h; never before an approval's validFor ends) */
  retentionSeconds?: number;
  /** how often the leader looks at every request for expiry and retention (default 5 s) */
  sweepSeconds?: number;
  log?: (f: Record<string, unknown>) => void;
  /** the API server's OIDC username prefixes (separation of duties); default DEFAULT_OIDC_USERNAME_PREFIXES */
  oidcUsernamePrefixes?: readonly string[];
}

export function approvalRoutes(
  o: ApprovalRoutesOptions = {},
): (app: express.Express, ctx: OperatorContext) => RoutesCloser {
  const notify = webhookNotifier(o.notifyUrl, o.log);
  return (app, ctx) => {
    const cache = new ApprovalCache(ctx.kubeConfig, o.log);
    const writer = new ApprovalWriter(ctx.kubeConfig);
    const lifecycle = new ApprovalLifecycle({
      cache,
      writer,
      isLeader: ctx.isLeader,
      events: new EventRecorder(ctx.kubeConfig, 'dbguard-approvals', o.log),
      notify,
      retentionSeconds: o.retentionSeconds,
      sweepSeconds: o.sweepSeconds,
      log: o.log,
    });
    const started = cache.start().then(() => lifecycle.start());
    app.use(
      approvalWebhookRouter(o.log, {
        ...(o.oidcUsernamePrefixes ? { usernamePrefixes: o.oidcUsernamePrefixes } : {}),
      }),
    );
    app.use(
      approvalRouter({
        store: ctx.store,
        cache,
        writer,
        authenticate: ctx.authenticate ?? tokenReviewAuthenticator(ctx.kubeConfig),
        notify,
        poke: (ar) => lifecycle.poke(ar),
        log: o.log,
      }),
    );
    return {
      ready: started,
      async close() {
        lifecycle.stop();
        await cache.stop();
      },
    };
  };
}
