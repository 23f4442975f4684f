/**
 * Optional notifications: a Slack-compatible incoming-webhook JSON body (`text` plus `blocks`) POSTed
 * to a URL on new requests and on every final state (approved, denied, expired, withdrawn). Best
 * effort: a slow or failing receiver never delays or fails an approval.
 */
import type { ApprovalRequest } from '../../api/types.js';
import { type ApprovalView, approveCommand, denyCommand } from './model.js';

export type Notify = (kind: 'requested' | 'decided', ar: ApprovalRequest, view: ApprovalView) => void;

export interface SlackMessage {
  text: string;
  blocks: { type: 'section'; text: { type: 'mrkdwn'; text: string } }[];
}

function subjectText(ar: ApprovalRequest): string {
  const s = ar.spec.subject ?? {};
  const parts = [
    s.serviceAccount && `serviceaccount ${s.serviceAccount}`,
    s.user && `user ${s.user}`,
    s.databaseUser && `database user ${s.databaseUser}`,
    s.pod && `pod ${s.pod}`,
  ].filter(Boolean);
  return parts.join(', ') || 'unknown subject';
}

/** Statements are normalized (no literals), but can be long: notifications carry a prefix. */
function clip(s: string, n = 500): string {
  return s.length > n ? `${s.slice(0, n)}…` : s;
}

export function slackMessage(
  kind: 'requested' | 'decided',
  ar: ApprovalRequest,
  v: ApprovalView,
): SlackMessage {
  const ns = ar.metadata.namespace ?? '';
  const id = `${ns}/${ar.metadata.name}`;
  let text: string;
  if (kind === 'requested') {
    text =
      `dbguard: approval requested ${id} (policy ${ar.spec.policyRef?.name}, rule ${ar.spec.rule}) by ${subjectText(ar)} ` +
      `on database ${ar.spec.database}; expires ${ar.spec.expiresAt}. Approve: ${approveCommand(ns, ar.metadata.name)}  ` +
      `Deny: ${denyCommand(ns, ar.metadata.name)}`;
  } else if (v.phase === 'Approved' || v.phase === 'Denied') {
    text =
      `dbguard: approval request ${id} ${v.phase.toLowerCase()} by ${v.decidedBy}` +
      `${v.reason ? ` (reason: ${v.reason})` : ''}; rule ${ar.spec.rule}, requested by ${subjectText(ar)}`;
  } else {
    text = `dbguard: approval request ${id} ${v.withdrawn ? 'withdrawn by the client' : 'expired undecided'}; rule ${ar.spec.rule}, requested by ${subjectText(ar)}`;
  }
  return {
    text,
    blocks: [
      { type: 'section', text: { type: 'mrkdwn', text } },
      { type: 'section', text: { type: 'mrkdwn', text: `\`\`\`${clip(ar.spec.statement ?? '')}\`\`\`` } },
    ],
  };
}

export function webhookNotifier(
  url: string | undefined,
  log?: (fields: Record<string, unknown>) => void,
  timeoutMs = 5000,
): Notify | undefined {
  if (!url) return undefined;
  const target = new URL(url); // a bad URL is a start-up error, not a silent loss of notifications
  return (kind, ar, view) => {
    const body = JSON.stringify(slackMessage(kind, ar, view));
    fetch(target, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body,
      signal: AbortSignal.timeout(timeoutMs),
    })
      .then(async (res) => {
        await res.arrayBuffer().catch(() => undefined);
        if (!res.ok) log?.({ msg: 'approval notification refused', status: res.status });
      })
      .catch((err) =>
        log?.({ msg: 'approval notification failed', error: String((err as Error)?.message ?? err) }),
      );
  };
}
