/**
 * Approvals at the operator, against the in-process Kubernetes API over HTTPS: the sidecar API
 * (create, long-poll, withdraw, Reject-mode lookup), the admission webhooks (who decided, separation
 * of duties, final decisions, expiry), the lifecycle (Expired, retention), notifications and
 * `kubectl dbguard`.
 */
import { ApiException, CustomObjectsApi, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DECIDED_BY_ANNOTATION } from '../../operator/approvals/index.js';
import { ApprovalClient, type ApprovalInput } from '../../sidecar/approvals.js';
import {
  ALICE,
  type ApprovalCluster,
  BOB,
  CHECKOUT_AS_USER,
  NS,
  SERVER_NAME,
  startApprovalCluster,
  until,
} from './helpers.js';

let c: ApprovalCluster;
let client: ApprovalClient;

const input = (over: Partial<ApprovalInput> = {}): ApprovalInput => ({
  policy: `${NS}/orders`,
  rule: 'held-deletes',
  subject: { serviceAccount: `${NS}/checkout`, pod: 'checkout-5d9f', groups: [], databaseUser: 'app' },
  database: 'orders',
  statement: 'DELETE FROM w_orders WHERE created_at < $1',
  fingerprint: `fp${Math.random().toString(16).slice(2, 14)}`,
  mode: 'Wait',
  timeoutSeconds: 30,
  validForSeconds: 3600,
  ...over,
});

const stored = (name: string) => c.api.store.get<any>('dbguard.io/v1alpha1', 'ApprovalRequest', NS, name);

beforeAll(async () => {
  c = await startApprovalCluster({ retentionSeconds: 2 });
  client = new ApprovalClient({
    operatorUrl: c.url,
    caPem: c.caPem,
    serverName: SERVER_NAME,
    token: () => c.sidecarToken,
    pollSeconds: 2,
  });
});

afterAll(async () => {
  await c?.close();
});

describe('approvals at the operator', () => {
  it('creates a request, long-polls it, and records who approved it (kubectl dbguard approve)', async () => {
    const ticket = await client.create(input());
    expect(ticket.name).toMatch(/^orders-[0-9a-f]{6}$/);
    expect(ticket.approveCommand).toBe(`kubectl dbguard approve ${ticket.name} -n ${NS} --reason "..."`);
    const ar = stored(ticket.name);
    expect(ar.spec).toMatchObject({
      policyRef: { name: 'orders' },
      rule: 'held-deletes',
      database: 'orders',
    });
    expect(ar.spec.subject.serviceAccount).toBe(`${NS}/checkout`);
    expect(ar.status.phase).toBe('Pending');
    await until('request notification', () =>
      c.notifications.find((n) => n.text.includes(`approval requested ${NS}/${ticket.name}`)),
    );

    // nothing decided: a short long-poll answers still pending, after waiting
    const ac = new AbortController();
    const waiting = client.wait(ticket, ac.signal);
    let settled = false;
    void waiting.then(() => (settled = true));
    await new Promise((r) => setTimeout(r, 2500));
    expect(settled).toBe(false);

    const list = await c.kubectl(ALICE, 'list');
    expect(list.code).toBe(0);
    expect(list.out).toContain(ticket.name);
    expect(list.out).toContain('held-deletes');

    const ok = await c.kubectl(ALICE, 'approve', ticket.name, '--reason', 'OPS-123');
    expect(ok.err).toBe('');
    expect(ok.code).toBe(0);
    expect(ok.out).toContain('approved by alice@example.com');
    const result = await waiting;
    expect(result).toMatchObject({ outcome: 'approved', decidedBy: 'alice@example.com', reason: 'OPS-123' });
    const done = await until('status Approved', () =>
      stored(ticket.name)?.status?.phase === 'Approved' ? stored(ticket.name) : undefined,
    );
    expect(done.status.decidedBy).toBe('alice@example.com');
    expect(Math.abs(Date.parse(done.status.decidedAt) - Date.now())).toBeLessThan(15_000);
    await until('decision notification', () =>
      c.notifications.find((n) => n.text.includes(`${NS}/${ticket.name} approved by alice@example.com`)),
    );
    await until('Approved Event', () =>
      c.api.store
        .list<any>('v1', 'Event', NS)
        .find((e) => e.reason === 'Approved' && e.involvedObject.name === ticket.name),
    );

    // a decision is final: neither another approver nor the same one can change it
    const again = await c.kubectl(BOB, 'deny', ticket.name, '-n', NS);
    expect(again.code).toBe(1);
    const crd = c.kubeConfigFor(BOB).makeApiClient(CustomObjectsApi);
    await expect(
      crd.patchNamespacedCustomObject(
        {
          group: 'dbguard.io',
          version: 'v1alpha1',
          namespace: NS,
          plural: 'approvalrequests',
          name: ticket.name,
          body: { spec: { decision: 'Denied' } },
        },
        setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
      ),
    ).rejects.toThrow(/already approved by alice@example.com/);
    const explain = await c.kubectl(BOB, 'explain', ticket.name);
    expect(explain.out).toContain('Decision:     Approved by alice@example.com');
    expect(explain.out).toContain('DELETE FROM w_orders WHERE created_at < $1');
  });

  it('refuses a decision by the requesting subject, and hand-written stamps', async () => {
    const ticket = await client.create(input());
    const self = await c.kubectl(CHECKOUT_AS_USER, 'approve', ticket.name);
    expect(self.code).toBe(1);
    expect(self.err).toMatch(/cannot decide its own request/);
    expect(stored(ticket.name).spec.decision).toBeUndefined();

    const crd = c.kubeConfigFor(BOB).makeApiClient(CustomObjectsApi);
    let err: unknown;
    try {
      await crd.patchNamespacedCustomObject(
        {
          group: 'dbguard.io',
          version: 'v1alpha1',
          namespace: NS,
          plural: 'approvalrequests',
          name: ticket.name,
          body: { metadata: { annotations: { [DECIDED_BY_ANNOTATION]: 'someone-else' } } },
        },
        setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
      );
    } catch (e) {
      err = e;
    }
    // the patch is admitted, and the mutating webhook puts the protected annotation back: it never sticks
    expect(err).toBeUndefined();
    expect(stored(ticket.name).metadata.annotations?.[DECIDED_BY_ANNOTATION]).toBeUndefined();
    // a request cannot be created already approved
    await expect(
      crd.createNamespacedCustomObject({
        group: 'dbguard.io',
        version: 'v1alpha1',
        namespace: NS,
        plural: 'approvalrequests',
        body: {
          apiVersion: 'dbguard.io/v1alpha1',
          kind: 'ApprovalRequest',
          metadata: { name: 'forged' },
          spec: { ...stored(ticket.name).spec, decision: 'Approved' },
        },
      }),
    ).rejects.toSatisfy(
      (e) =>
        e instanceof ApiException &&
        e.code === 403 &&
        /an approval request cannot be created already decided/.test(String(e.body)),
    );
    const deny = await c.kubectl(BOB, 'deny', ticket.name, '--reason', 'not during peak');
    expect(deny.code).toBe(0);
    const r = await client.wait(ticket, new AbortController().signal);
    expect(r).toMatchObject({ outcome: 'denied', decidedBy: 'bob@example.com', reason: 'not during peak' });
  });

  it('expires an undecided request (phase Expired) and refuses a late decision', async () => {
    const ticket = await client.create(input({ rule: 'short-held-deletes', statement: 'DELETE FROM t_x' }));
    const r = await client.wait(ticket, new AbortController().signal);
    expect(r.outcome).toBe('expired');
    await until('phase Expired', () => stored(ticket.name)?.status?.phase === 'Expired');
    expect(stored(ticket.name).status.conditions.find((x: any) => x.type === 'Expired').reason).toBe(
      'Timeout',
    );
    const late = await c.kubectl(ALICE, 'approve', ticket.name);
    expect(late.code).toBe(1);
    expect(late.err).toMatch(/Expired/);
  });

  it('withdraws a request when the client goes away, and then nobody can approve it', async () => {
    const ticket = await client.create(input());
    const ac = new AbortController();
    const waiting = client.wait(ticket, ac.signal);
    await new Promise((r) => setTimeout(r, 300));
    ac.abort('gone');
    expect((await waiting).outcome).toBe('withdrawn');
    const ar = stored(ticket.name);
    expect(ar.status.phase).toBe('Expired');
    expect(ar.status.conditions.find((x: any) => x.type === 'Withdrawn')).toMatchObject({
      status: 'True',
      reason: 'ClientDisconnected',
    });
    const late = await c.kubectl(ALICE, 'approve', ticket.name, '-n', NS);
    expect(late.code).toBe(1);
    expect((await c.kubectl(ALICE, 'list')).out).not.toContain(ticket.name);
  });

  it('Reject mode: reuses the open request, lets the statement through for validFor after approval', async () => {
    const fp = `fprej${Date.now().toString(16)}`;
    const rej = input({
      rule: 'rejected-deletes',
      fingerprint: fp,
      mode: 'Reject',
      statement: 'DELETE FROM r_x',
    });
    expect(await client.approvedRecently(rej.subject, fp, rej.rule, rej.policy)).toBe(false);
    const t1 = await client.create(rej);
    const t2 = await client.create({ ...rej, subject: { ...rej.subject, pod: 'checkout-other' } });
    expect(t2).toMatchObject({ name: t1.name, reused: true });
    // another database user is another subject
    const t3 = await client.create({ ...rej, subject: { ...rej.subject, databaseUser: 'other' } });
    expect(t3.name).not.toBe(t1.name);
    expect((await c.kubectl(ALICE, 'approve', t1.name)).code).toBe(0);
    expect(await client.approvedRecently(rej.subject, fp, rej.rule, rej.policy)).toBe(true);
    expect(
      await client.approvedRecently({ ...rej.subject, databaseUser: 'other' }, fp, rej.rule, rej.policy),
    ).toBe(false);
    expect(await client.approvedRecently(rej.subject, `${fp}0`, rej.rule, rej.policy)).toBe(false);
    await until(
      'validFor over',
      async () => !(await client.approvedRecently(rej.subject, fp, rej.rule, rej.policy)),
      8000,
    );
  });

  it('deletes final requests after the retention period (not before validFor)', async () => {
    const denied = await client.create(input());
    expect((await c.kubectl(ALICE, 'deny', denied.name)).code).toBe(0);
    await until('denied deleted after retention', () => !stored(denied.name), 10_000);
    // rule rejected-deletes: validFor 3 s, longer than the 2 s retention. An approval is kept while it
    // still lets statements through: it disappears no earlier than decidedAt + 3 s.
    const approved = await client.create(
      input({ rule: 'rejected-deletes', statement: 'DELETE FROM appr_rej.t' }),
    );
    expect((await c.kubectl(ALICE, 'approve', approved.name)).code).toBe(0);
    const decidedAt = await until('decided', () => stored(approved.name)?.status?.decidedAt, 10_000);
    await until('approved deleted once validFor is over', () => !stored(approved.name), 15_000);
    expect(Date.now() - Date.parse(decidedAt)).toBeGreaterThanOrEqual(3000);
  }, 60_000);

  it('refuses sidecars of another namespace, impersonation and unknown rules', async () => {
    const other = new ApprovalClient({
      operatorUrl: c.url,
      caPem: c.caPem,
      serverName: SERVER_NAME,
      token: () => 'sa:other:app',
    });
    await expect(other.create(input())).rejects.toThrow(/may only act in namespace other/);
    await expect(client.create(input({ subject: { serviceAccount: `${NS}/admin` } }))).rejects.toThrow(
      /on behalf of/,
    );
    await expect(client.create(input({ rule: 'no-such-rule' }))).rejects.toThrow(/no RequireApproval rule/);
    const anonymous = new ApprovalClient({ operatorUrl: c.url, caPem: c.caPem, serverName: SERVER_NAME });
    await expect(anonymous.create(input())).rejects.toThrow(/bearer token/);
  });
});
