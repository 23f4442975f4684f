/**
 * HTTP routing for the in-process Kubernetes API: authentication by bearer token, discovery, the REST
 * verbs (delegated to Operations), watch streams, Table output for kubectl, a request log and fault hooks.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { apiGroup, apiGroupList, apiResourceList, apiVersions, versionInfo } from './discovery.js';
import { ApiError, badRequest, methodNotAllowed, resourceNotFound, statusObject } from './errors.js';
import type { DeleteOptions, Operations, RequestContext } from './operations.js';
import { typeKey } from './resources.js';
import { matchesFields, matchesLabels, parseFieldSelector, parseLabelSelector } from './selectors.js';
import type { Watcher } from './store.js';
import { toTable, wantsTable } from './table.js';
import type { ChangeEvent, KubeObject, RequestRecord, ResourceType, UserInfo } from './types.js';

const MAX_BODY = 3 * 1024 * 1024;
const REQUEST_LOG_LIMIT = 5000;

export interface FaultMatch {
  verb?: string;
  group?: string;
  resource?: string;
  subresource?: string;
  namespace?: string;
  name?: string;
}

interface Fault {
  match: FaultMatch;
  error: ApiError;
  remaining: number;
}

interface ActiveWatch {
  stalled: boolean;
  end(): void;
}

export interface ServerState {
  tokens: Map<string, UserInfo>;
  anonymous: boolean;
  bookmarkIntervalMs: number;
  serverAddress: () => string;
}

export class ApiHandler {
  readonly requests: RequestRecord[] = [];
  private readonly faults: Fault[] = [];
  private readonly watches = new Set<ActiveWatch>();
  private stallNew = false;

  constructor(
    private readonly ops: Operations,
    private readonly state: ServerState,
  ) {}

  get activeWatchCount(): number {
    return this.watches.size;
  }

  /** Watches stop sending (events, bookmarks, timeouts) but stay open, like a dead network path. */
  stallWatches(): void {
    this.stallNew = true;
    for (const w of this.watches) w.stalled = true;
  }

  /** New watches work again; already stalled ones stay silent until the client gives up on them. */
  resumeWatches(): void {
    this.stallNew = false;
  }

  /** Ends every open watch stream normally (as kube-apiserver does at its watch timeout or on restart). */
  endWatches(): void {
    for (const w of [...this.watches]) w.end();
  }

  injectFault(match: FaultMatch, error: ApiError, times: number): void {
    this.faults.push({ match, error, remaining: times });
  }

  clearFaults(): void {
    this.faults.length = 0;
  }

  handle = (req: IncomingMessage, res: ServerResponse): void => {
    const url = new URL(req.url ?? '/', 'http://x');
    const query = Object.fromEntries(url.searchParams);
    const rec: RequestRecord = {
      time: Date.now(),
      method: req.method ?? 'GET',
      path: url.pathname,
      query,
      verb: 'other',
    };
    this.requests.push(rec);
    if (this.requests.length > REQUEST_LOG_LIMIT)
      this.requests.splice(0, this.requests.length - REQUEST_LOG_LIMIT);
    res.on('finish', () => {
      rec.status ??= res.statusCode;
    });
    const warnings: string[] = [];
    this.route(req, res, url, rec, warnings).catch((err: unknown) => {
      const e =
        err instanceof ApiError
          ? err
          : new ApiError(500, 'InternalError', `Internal error occurred: ${(err as Error)?.message ?? err}`);
      rec.status = e.code;
      if (res.headersSent) {
        res.end();
        return;
      }
      send(res, e.code, e.toStatus(), warnings);
    });
  };

  private authenticate(req: IncomingMessage): UserInfo {
    const h = req.headers.authorization ?? '';
    const m = /^Bearer\s+(.+)$/i.exec(h);
    if (m) {
      const u = this.state.tokens.get(m[1]!.trim());
      if (u) return u;
    } else if (this.state.anonymous)
      return { username: 'system:anonymous', groups: ['system:unauthenticated'] };
    throw new ApiError(401, 'Unauthorized', 'Unauthorized');
  }

  private async route(
    req: IncomingMessage,
    res: ServerResponse,
    url: URL,
    rec: RequestRecord,
    warnings: string[],
  ) {
    const path = url.pathname.replace(/\/+$/, '') || '/';
    if (['/healthz', '/livez', '/readyz'].includes(path)) {
      rec.verb = 'discovery';
      res.writeHead(200, { 'Content-Type': 'text/plain' }).end('ok');
      return;
    }
    if (path === '/version') {
      rec.verb = 'discovery';
      return send(res, 200, versionInfo);
    }
    const user = this.authenticate(req);
    rec.user = user.username;
    const segs = path.split('/').filter(Boolean).map(decodeURIComponent);
    const method = req.method ?? 'GET';

    // discovery
    if (segs[0] === 'api' && segs.length <= 2) {
      rec.verb = 'discovery';
      if (method !== 'GET') throw methodNotAllowed(method);
      if (segs.length === 1) return send(res, 200, apiVersions(this.state.serverAddress()));
      const list = apiResourceList(this.ops.registry, '', segs[1]!);
      if (!list) throw resourceNotFound();
      return send(res, 200, list);
    }
    if (segs[0] === 'apis' && segs.length <= 3) {
      rec.verb = 'discovery';
      if (method !== 'GET') throw methodNotAllowed(method);
      if (segs.length === 1) return send(res, 200, apiGroupList(this.ops.registry));
      const doc =
        segs.length === 2
          ? apiGroup(this.ops.registry, segs[1]!)
          : apiResourceList(this.ops.registry, segs[1]!, segs[2]!);
      if (!doc) throw resourceNotFound();
      return send(res, 200, doc);
    }
    let group: string;
    let version: string;
    let rest: string[];
    if (segs[0] === 'api') [group, version, rest] = ['', segs[1]!, segs.slice(2)];
    else if (segs[0] === 'apis') [group, version, rest] = [segs[1]!, segs[2]!, segs.slice(3)];
    else throw resourceNotFound();
    let watchPath = false;
    if (rest[0] === 'watch') {
      watchPath = true;
      rest = rest.slice(1);
    }

    let namespace: string | undefined;
    let plural: string;
    let name: string | undefined;
    let sub: string | undefined;
    const nsType =
      rest[0] === 'namespaces' && rest.length >= 3
        ? this.ops.registry.byPlural(group, version, rest[2]!)
        : undefined;
    if (nsType?.namespaced) {
      [namespace, plural, name, sub] = [rest[1], rest[2]!, rest[3], rest[4]];
      if (rest.length > 5) throw resourceNotFound();
    } else {
      [plural, name, sub] = [rest[0]!, rest[1], rest[2]];
      if (rest.length > 3 || !plural) throw resourceNotFound();
    }
    const type = this.ops.registry.byPlural(group, version, plural);
    if (!type) throw resourceNotFound();
    if (!type.namespaced && namespace !== undefined) throw resourceNotFound();
    if (sub !== undefined && !(sub === 'status' && type.statusSubresource)) throw resourceNotFound();
    Object.assign(rec, { group, resource: plural, subresource: sub, namespace, name });

    const q = url.searchParams;
    const isWatch = watchPath || q.get('watch') === 'true' || q.get('watch') === '1';
    rec.verb = verbOf(method, name, isWatch);
    if (type.createOnly && rec.verb !== 'create') throw methodNotAllowed(method);
    if (type.namespaced && namespace === undefined && !['list', 'watch'].includes(rec.verb))
      throw resourceNotFound();
    this.checkFault(rec);

    const ctx: RequestContext = {
      user,
      dryRun: q.getAll('dryRun').includes('All'),
      fieldValidation: q.get('fieldValidation') ?? undefined,
      warnings,
    };
    const table = wantsTable(req.headers.accept);
    let out: KubeObject;
    let code = 200;
    switch (rec.verb) {
      case 'watch':
        return this.watch(req, res, type, version, namespace, name, q);
      case 'list':
        out = this.ops.list(type, version, namespace, {
          labelSelector: q.get('labelSelector') ?? undefined,
          fieldSelector: q.get('fieldSelector') ?? undefined,
          limit: q.has('limit') ? Number(q.get('limit')) : undefined,
          continueToken: q.get('continue') ?? undefined,
        });
        if (table)
          out = toTable(type, version, out.items as KubeObject[], out.metadata as Record<string, unknown>);
        break;
      case 'get':
        out = this.ops.get(type, version, namespace, name!);
        if (table && !sub) out = toTable(type, version, [out]);
        break;
      case 'create':
        if (name !== undefined) throw methodNotAllowed(method);
        out = await this.ops.create(type, version, namespace, await readJson(req), ctx);
        code = type.createOnly ? 200 : 201;
        break;
      case 'update':
        out = await this.ops.update(type, version, namespace, name!, await readJson(req), sub, ctx);
        break;
      case 'patch':
        out = await this.ops.patch(
          type,
          version,
          namespace,
          name!,
          req.headers['content-type'] ?? '',
          await readText(req),
          sub,
          ctx,
        );
        break;
      case 'delete':
        if (sub) throw methodNotAllowed(method);
        out = await this.ops.delete(
          type,
          version,
          namespace,
          name!,
          deleteOptions(await readOptionalJson(req), q),
          ctx,
        );
        break;
      case 'deletecollection':
        out = await this.ops.deleteCollection(
          type,
          version,
          namespace,
          {
            labelSelector: q.get('labelSelector') ?? undefined,
            fieldSelector: q.get('fieldSelector') ?? undefined,
          },
          deleteOptions(await readOptionalJson(req), q),
          ctx,
        );
        break;
      default:
        throw methodNotAllowed(method);
    }
    rec.status = code;
    send(res, code, out, warnings);
  }

  private checkFault(rec: RequestRecord): void {
    for (const f of this.faults) {
      if (f.remaining <= 0) continue;
      const m = f.match;
      if (m.verb !== undefined && m.verb !== rec.verb) continue;
      if (m.group !== undefined && m.group !== rec.group) continue;
      if (m.resource !== undefined && m.resource !== rec.resource) continue;
      if (m.subresource !== undefined && m.subresource !== rec.subresource) continue;
      if (m.namespace !== undefined && m.namespace !== rec.namespace) continue;
      if (m.name !== undefined && m.name !== rec.name) continue;
      f.remaining -= 1;
      throw f.error;
    }
  }

  private watch(
    req: IncomingMessage,
    res: ServerResponse,
    type: ResourceType,
    version: string,
    namespace: string | undefined,
    name: string | undefined,
    q: URLSearchParams,
  ): void {
    const labels = parseLabelSelector(q.get('labelSelector') ?? undefined);
    const fields = parseFieldSelector(
      [q.get('fieldSelector'), name ? `metadata.name=${name}` : undefined].filter(Boolean).join(','),
    );
    const rvParam = q.get('resourceVersion') ?? '';
    if (rvParam !== '' && !/^\d+$/.test(rvParam)) throw badRequest(`invalid resource version: ${rvParam}`);
    const timeoutSeconds = q.has('timeoutSeconds') ? Number(q.get('timeoutSeconds')) : undefined;
    const bookmarks = q.get('allowWatchBookmarks') === 'true';
    const key = typeKey(type.group, type.plural);
    const matches = (o: KubeObject | undefined) =>
      o !== undefined &&
      (namespace === undefined || o.metadata?.namespace === namespace) &&
      matchesLabels(labels, o.metadata?.labels) &&
      matchesFields(fields, o);

    res.writeHead(200, {
      'Content-Type': 'application/json',
      'Cache-Control': 'no-cache, private',
      'Transfer-Encoding': 'chunked',
    });
    res.flushHeaders();
    res.socket?.setNoDelay(true);
    const active: ActiveWatch = { stalled: this.stallNew, end: () => finish() };
    const write = (type: string, object: unknown) => {
      if (!active.stalled && !res.writableEnded) res.write(`${JSON.stringify({ type, object })}\n`);
    };
    const timers: NodeJS.Timeout[] = [];
    const watcher: Watcher = {
      key,
      deliver: (ev: ChangeEvent) => {
        const now = matches(ev.object);
        const before = ev.type === 'MODIFIED' ? matches(ev.old) : now;
        let t: string | undefined;
        if (ev.type === 'MODIFIED')
          t = now && before ? 'MODIFIED' : now ? 'ADDED' : before ? 'DELETED' : undefined;
        else t = now ? ev.type : undefined;
        if (t) write(t, this.ops.present(type, version, ev.object));
      },
    };
    let finished = false;
    const finish = () => {
      if (finished) return;
      finished = true;
      for (const t of timers) clearTimeout(t);
      this.ops.store.unwatch(watcher);
      this.watches.delete(active);
      if (!res.writableEnded) res.end();
    };
    this.watches.add(active);
    req.on('close', finish);
    res.on('close', finish);

    let from: number;
    if (rvParam === '' || rvParam === '0') {
      // "get state and start at most recent": every current object as ADDED, then changes
      for (const o of this.ops.store.list(key, type.namespaced ? namespace : undefined))
        if (matches(o)) write('ADDED', this.ops.present(type, version, o));
      from = this.ops.store.resourceVersion;
      if (q.get('sendInitialEvents') === 'true' && bookmarks)
        write('BOOKMARK', bookmark(type, version, from, { 'k8s.io/initial-events-end': 'true' }));
    } else from = Number(rvParam);
    if (!this.ops.store.watch(watcher, from)) {
      write('ERROR', {
        ...statusObject(
          'Failure',
          410,
          'Expired',
          `too old resource version: ${from} (${this.ops.store.oldestWatchableResourceVersion})`,
        ),
      });
      finish();
      return;
    }
    if (timeoutSeconds !== undefined && timeoutSeconds > 0)
      timers.push(setTimeout(() => !active.stalled && finish(), timeoutSeconds * 1000));
    if (bookmarks) {
      const tick = () => {
        if (finished) return;
        write('BOOKMARK', bookmark(type, version, this.ops.store.resourceVersion));
        timers.push(setTimeout(tick, this.state.bookmarkIntervalMs));
      };
      timers.push(setTimeout(tick, this.state.bookmarkIntervalMs));
    }
  }
}

function bookmark(type: ResourceType, version: string, rv: number, annotations?: Record<string, string>) {
  return {
    kind: type.kind,
    apiVersion: type.group ? `${type.group}/${version}` : version,
    metadata: { resourceVersion: String(rv), ...(annotations ? { annotations } : {}) },
  };
}

function verbOf(method: string, name: string | undefined, watch: boolean): string {
  switch (method) {
    case 'GET':
      return watch ? 'watch' : name ? 'get' : 'list';
    case 'POST':
      return 'create';
    case 'PUT':
      return name ? 'update' : 'other';
    case 'PATCH':
      return name ? 'patch' : 'other';
    case 'DELETE':
      return name ? 'delete' : 'deletecollection';
    default:
      return 'other';
  }
}

function deleteOptions(body: unknown, q: URLSearchParams): DeleteOptions {
  const b = (body && typeof body === 'object' ? body : {}) as Record<string, any>;
  return {
    preconditions: b.preconditions,
    propagationPolicy: b.propagationPolicy ?? q.get('propagationPolicy') ?? undefined,
  };
}

function send(res: ServerResponse, code: number, body: unknown, warnings: string[] = []): void {
  const text = JSON.stringify(body);
  const headers: Record<string, string | string[]> = {
    'Content-Type': 'application/json',
    'Content-Length': String(Buffer.byteLength(text)),
  };
  if (warnings.length)
    headers.Warning = [...new Set(warnings)].map((w) => `299 - ${JSON.stringify(w.replace(/[\r\n]/g, ' '))}`);
  res.writeHead(code, headers).end(text);
}

function readText(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY) {
        reject(new ApiError(413, 'RequestEntityTooLarge', 'the request body is too large'));
        req.destroy();
      } else chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const text = await readText(req);
  try {
    return JSON.parse(text);
  } catch (err) {
    throw badRequest(`the request body is not valid JSON: ${(err as Error).message}`);
  }
}

async function readOptionalJson(req: IncomingMessage): Promise<unknown> {
  const text = await readText(req);
  if (!text.trim()) return undefined;
  try {
    return JSON.parse(text);
  } catch (err) {
    throw badRequest(`the request body is not valid JSON: ${(err as Error).message}`);
  }
}
