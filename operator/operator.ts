/**
 * `dbguard operator`: wires the controller, the policy server, leader election and the metrics/health
 * listener together. Every replica watches, compiles and serves; only the leader writes status,
 * Events and other objects.
 */

import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type net from 'node:net';
import os from 'node:os';
import type * as k8s from '@kubernetes/client-node';
import express from 'express';
import { parseListen } from '../api/listen.js';
import type { TlsSource } from './certs/types.js';
import { PolicyController } from './controller.js';
import { LeaderElector } from './leader.js';
import { OperatorMetrics } from './metrics.js';
import { policyRouter, tuneForLongPoll } from './policy-server.js';
import { PolicyStore } from './policy-store.js';
import { type Authenticate, tokenReviewAuthenticator } from './sidecar-auth.js';

export interface OperatorOptions {
  kubeConfig: k8s.KubeConfig;
  /** `host:port` of the HTTPS (or HTTP without a certificate) API: policies and webhooks */
  listen: string;
  metricsListen?: string;
  leaderElect?: boolean;
  /** namespace of the Lease (the operator's own) */
  namespace?: string;
  identity?: string;
  leaseDurationSeconds?: number;
  renewDeadlineSeconds?: number;
  retryPeriodSeconds?: number;
  tls?: { cert: string; key: string };
  /** a certificate source that can change while running (self-managed or files); wins over `tls` */
  certificates?: (ctx: OperatorContext) => TlsSource;
  authenticate?: Authenticate;
  resyncSeconds?: number;
  watchdogSeconds?: number;
  log?: (fields: Record<string, unknown>) => void;
  /** extra routes (webhooks, approvals) mounted on the API listener, in order */
  routes?: RoutesFn | RoutesFn[];
}

/** What a routes function may return: something to await before serving, and to close on shutdown. */
export interface RoutesCloser {
  ready?: Promise<void>;
  close?(): Promise<void>;
}

// biome-ignore lint/suspicious/noConfusingVoidType: a routes function may return nothing (plain webhooks)
export type RoutesFn = (app: express.Express, ctx: OperatorContext) => void | RoutesCloser;

export interface OperatorContext {
  store: PolicyStore;
  metrics: OperatorMetrics;
  isLeader: () => boolean;
  kubeConfig: k8s.KubeConfig;
  /** the serving certificate's source when `certificates` was given (its caBundle is what clients trust) */
  tls?: TlsSource;
  /** how sidecars are authenticated (bearer token → ServiceAccount) */
  authenticate?: Authenticate;
}

export interface RunningOperator extends OperatorContext {
  controller: PolicyController;
  elector?: LeaderElector;
  port: number;
  metricsPort?: number;
  close(): Promise<void>;
}

export function splitHostPort(listen: string, defaultHost = '0.0.0.0'): { host: string; port: number } {
  return parseListen(listen, { defaultHost, barePort: true });
}

function listenOn(server: net.Server, listen: string): Promise<number> {
  const { host, port } = splitHostPort(listen);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve((server.address() as net.AddressInfo).port));
  });
}

export async function runOperator(opts: OperatorOptions): Promise<RunningOperator> {
  const log =
    opts.log ??
    ((f) => process.stderr.write(`${JSON.stringify({ time: new Date().toISOString(), ...f })}\n`));
  const metrics = new OperatorMetrics();
  const store = new PolicyStore();
  let leader = !opts.leaderElect;
  const isLeader = () => leader;
  const controller = new PolicyController({
    kubeConfig: opts.kubeConfig,
    store,
    metrics,
    isLeader,
    log,
    resyncSeconds: opts.resyncSeconds,
    watchdogSeconds: opts.watchdogSeconds,
  });
  let elector: LeaderElector | undefined;
  if (opts.leaderElect) {
    elector = new LeaderElector({
      kubeConfig: opts.kubeConfig,
      namespace: opts.namespace ?? 'dbguard-system',
      name: 'dbguard-operator-leader',
      identity: opts.identity ?? `${os.hostname()}-${process.pid}`,
      leaseDurationSeconds: opts.leaseDurationSeconds,
      renewDeadlineSeconds: opts.renewDeadlineSeconds,
      retryPeriodSeconds: opts.retryPeriodSeconds,
      log,
      onStartedLeading: () => {
        leader = true;
        metrics.leader.set(1);
        controller.enqueueAll();
        // leader-only certificate work (caBundles) must not wait for the next periodic check
        ctx.tls?.leading?.();
      },
      onStoppedLeading: () => {
        leader = false;
        metrics.leader.set(0);
      },
    });
  } else {
    metrics.leader.set(1);
  }
  const authenticate = opts.authenticate ?? tokenReviewAuthenticator(opts.kubeConfig);
  const ctx: OperatorContext = { store, metrics, isLeader, kubeConfig: opts.kubeConfig, authenticate };
  let tls = opts.tls;
  if (opts.certificates) {
    ctx.tls = opts.certificates(ctx);
    const m = await ctx.tls.start();
    tls = { cert: m.cert, key: m.key };
  }

  const app = express();
  app.disable('x-powered-by');
  app.use(
    policyRouter({
      store,
      metrics,
      log,
      authenticate,
      reportMaskingProblems: (ns, name, version, database, problems) =>
        controller.reportMaskingProblems(ns, name, version, database, problems),
    }),
  );
  const closers: RoutesCloser[] = [];
  for (const r of Array.isArray(opts.routes) ? opts.routes : opts.routes ? [opts.routes] : []) {
    const c = r(app, ctx);
    if (c) closers.push(c);
  }
  const server = tls ? https.createServer({ cert: tls.cert, key: tls.key }, app) : http.createServer(app);
  // a renewed certificate is used for new connections without a restart
  ctx.tls?.onChange((m) => (server as https.Server).setSecureContext({ cert: m.cert, key: m.key }));
  tuneForLongPoll(server);

  let metricsServer: http.Server | undefined;
  let metricsPort: number | undefined;
  if (opts.metricsListen) {
    const m = express();
    m.get('/metrics', async (_req, res) => {
      res.setHeader('Content-Type', metrics.registry.contentType);
      res.send(await metrics.registry.metrics());
    });
    m.get('/healthz', (_req, res) => void res.json({ ok: true }));
    m.get('/readyz', (_req, res) => {
      const ok = controller.policies.synced && controller.maskingRules.synced;
      res.status(ok ? 200 : 503).json({ ok, leader: leader });
    });
    metricsServer = http.createServer(m);
    metricsPort = await listenOn(metricsServer, opts.metricsListen);
  }

  await controller.start();
  await Promise.all(closers.map((c) => c.ready));
  elector?.start();
  const port = await listenOn(server, opts.listen);
  log({ msg: 'operator started', port, metricsPort, leaderElect: !!opts.leaderElect, tls: !!tls });

  return {
    ...ctx,
    controller,
    elector,
    port,
    metricsPort,
    async close() {
      await elector?.stop();
      await controller.stop();
      for (const c of closers) await c.close?.();
      await ctx.tls?.stop();
      server.closeAllConnections?.();
      await new Promise<void>((r) => server.close(() => r()));
      if (metricsServer) await new Promise<void>((r) => metricsServer!.close(() => r()));
    },
  };
}

/** Read a PEM pair from files (cert-manager or provided certificates). */
export function readTls(certFile?: string, keyFile?: string): { cert: string; key: string } | undefined {
  if (!certFile && !keyFile) return undefined;
  if (!certFile || !keyFile) throw new Error('--tls-cert and --tls-key go together');
  return { cert: fs.readFileSync(certFile, 'utf8'), key: fs.readFileSync(keyFile, 'utf8') };
}
