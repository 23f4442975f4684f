/**
 * The verbs with kube-apiserver's semantics: create, get, list, update, patch, delete, deletecollection,
 * the status subresource, generation, resourceVersion preconditions, finalizers, namespace termination,
 * owner-reference cascading, CRD schemas and admission. HTTP lives in server.ts; this module is callable
 * directly (the test-facing store uses it too).
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { parse as parseYaml } from 'yaml';
import { AdmissionChain, type Operation } from './admission.js';
import {
  ApiError,
  badRequest,
  conflict,
  invalid,
  notFound,
  STALE,
  type StatusCause,
  statusObject,
} from './errors.js';
import { applyJsonPatch, applyMergePatch, applyStrategicMergePatch, deepEqual } from './patch.js';
import { ResourceRegistry, resourceTypeFromCrd, splitApiVersion, typeKey } from './resources.js';
import { SchemaValidator } from './schema.js';
import { matchesFields, matchesLabels, parseFieldSelector, parseLabelSelector } from './selectors.js';
import { ObjectStore } from './store.js';
import type { KubeObject, ResourceType, UserInfo } from './types.js';

export interface RequestContext {
  user: UserInfo;
  dryRun?: boolean;
  /** `fieldValidation` query parameter: Strict fails on unknown fields, Warn (default) warns, Ignore drops */
  fieldValidation?: string;
  /** filled in: Warning headers for the response */
  warnings: string[];
  /** internal writes (seeding, registerCrd) skip webhooks */
  skipAdmission?: boolean;
  /** fields pruned so far in this request (defaulting runs before and after mutating admission) */
  pruned?: Set<string>;
}

export interface ListOptions {
  labelSelector?: string;
  fieldSelector?: string;
  limit?: number;
  continueToken?: string;
}

export interface DeleteOptions {
  preconditions?: { uid?: string; resourceVersion?: string };
  propagationPolicy?: string;
}

export interface OperationsOptions {
  historyLimit: number;
  /** creating in a namespace that does not exist fails with 404, as on a cluster */
  requireNamespaces: boolean;
}

const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const isObject = (v: unknown): v is Record<string, any> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

export class Operations {
  readonly store: ObjectStore;
  readonly registry = new ResourceRegistry();
  readonly admission = new AdmissionChain();
  private readonly validator = new SchemaValidator();

  constructor(private readonly opts: OperationsOptions) {
    this.store = new ObjectStore(opts.historyLimit);
  }

  /** The object as served at `version` (conversion strategy None: only apiVersion changes). */
  present(type: ResourceType, version: string, obj: KubeObject): KubeObject {
    const out = structuredClone(obj);
    out.apiVersion = type.group ? `${type.group}/${version}` : version;
    out.kind = type.kind;
    return out;
  }

  get(type: ResourceType, version: string, namespace: string | undefined, name: string): KubeObject {
    const obj = this.store.get(
      typeKey(type.group, type.plural),
      type.namespaced ? namespace : undefined,
      name,
    );
    if (!obj) throw notFound(type.group, type.plural, name);
    return this.present(type, version, obj);
  }

  list(type: ResourceType, version: string, namespace: string | undefined, o: ListOptions = {}): KubeObject {
    const labels = parseLabelSelector(o.labelSelector);
    const fields = parseFieldSelector(o.fieldSelector);
    let items = this.store
      .list(typeKey(type.group, type.plural), type.namespaced ? namespace : undefined)
      .filter((x) => matchesLabels(labels, x.metadata?.labels) && matchesFields(fields, x));
    const rv = String(this.store.resourceVersion);
    const metadata: Record<string, unknown> = { resourceVersion: rv };
    if (o.continueToken) {
      let after: string;
      try {
        after = JSON.parse(Buffer.from(o.continueToken, 'base64url').toString('utf8')).after;
      } catch {
        throw new ApiError(400, 'BadRequest', 'continue key is not valid');
      }
      items = items.filter((x) => `${x.metadata?.namespace ?? ''}/${x.metadata?.name}` > after);
    }
    if (o.limit && o.limit > 0 && items.length > o.limit) {
      const rest = items.length - o.limit;
      items = items.slice(0, o.limit);
      const last = items[items.length - 1]!;
      metadata.continue = Buffer.from(
        JSON.stringify({ after: `${last.metadata?.namespace ?? ''}/${last.metadata?.name}` }),
      ).toString('base64url');
      metadata.remainingItemCount = rest;
    }
    return {
      apiVersion: type.group ? `${type.group}/${version}` : version,
      kind: type.listKind,
      metadata,
      // typed built-in lists carry no apiVersion/kind per item; custom resource lists do
      items: items.map((x) => {
        const p = this.present(type, version, x);
        if (!type.crd) {
          delete p.apiVersion;
          delete p.kind;
        }
        return p;
      }),
    };
  }

  // ---------------------------------------------------------------- create

  async create(
    type: ResourceType,
    version: string,
    namespace: string | undefined,
    body: unknown,
    ctx: RequestContext,
  ): Promise<KubeObject> {
    const obj = this.checkBody(type, version, namespace, body);
    const meta = obj.metadata!;
    if (type.createOnly) return this.createVirtual(type, version, obj, ctx);
    for (const f of [
      'uid',
      'resourceVersion',
      'creationTimestamp',
      'generation',
      'deletionTimestamp',
      'deletionGracePeriodSeconds',
      'managedFields',
      'selfLink',
    ])
      delete meta[f];
    if (type.namespaced) this.checkNamespaceOpen(meta.namespace!);
    if (type.statusSubresource && type.crd) delete obj.status;
    this.defaultsForType(type, obj, undefined);
    if (type.crd) this.schemaCheck(type, version, obj, ctx, false);

    let current = obj;
    if (!ctx.skipAdmission) current = await this.mutate('CREATE', type, version, current, undefined, ctx);
    if (!current.metadata?.name) {
      if (!current.metadata?.generateName)
        throw invalid(type.kind, type.group, '', [
          {
            reason: 'FieldValueRequired',
            message: 'name or generateName is required',
            field: 'metadata.name',
          },
        ]);
      current.metadata.name = `${current.metadata.generateName}${randomSuffix()}`;
    }
    this.validateMeta(type, current);
    if (type.crd) this.schemaCheck(type, version, current, ctx, true);
    if (isCrdType(type)) this.checkCrd(current);
    if (!ctx.skipAdmission) await this.validate('CREATE', type, version, current, undefined, ctx);

    const key = typeKey(type.group, type.plural);
    const name = current.metadata!.name!;
    if (this.store.get(key, type.namespaced ? current.metadata!.namespace : undefined, name))
      throw new ApiError(
        409,
        'AlreadyExists',
        `${type.group ? `${type.plural}.${type.group}` : type.plural} "${name}" already exists`,
        {
          name,
          group: type.group,
          kind: type.plural,
        },
      );
    const m = current.metadata!;
    m.uid = randomUUID();
    m.creationTimestamp = now();
    if (type.generation) m.generation = 1;
    if (isCrdType(type)) crdStatus(current);
    if (ctx.dryRun) return this.present(type, version, current);
    m.resourceVersion = String(this.store.nextResourceVersion());
    this.store.write(key, 'ADDED', current);
    if (isCrdType(type)) this.registry.applyCrd(current);
    return this.present(type, version, current);
  }

  /** TokenReview and its kind: answered, never stored. */
  tokenReview: (review: KubeObject, ctx: RequestContext) => Promise<KubeObject> | KubeObject = (r) => r;

  private async createVirtual(type: ResourceType, version: string, obj: KubeObject, ctx: RequestContext) {
    if (type.kind === 'TokenReview') {
      const spec = obj.spec;
      if (!isObject(spec) || typeof spec.token !== 'string' || spec.token === '')
        throw invalid('TokenReview', type.group, '', [
          {
            reason: 'FieldValueRequired',
            message: 'Required value: token must not be empty',
            field: 'spec.token',
          },
        ]);
      return this.present(type, version, await this.tokenReview(obj, ctx));
    }
    throw new ApiError(405, 'MethodNotAllowed', `${type.plural} cannot be created`);
  }

  // ---------------------------------------------------------------- update / patch

  async update(
    type: ResourceType,
    version: string,
    namespace: string | undefined,
    name: string,
    body: unknown,
    subresource: string | undefined,
    ctx: RequestContext,
  ): Promise<KubeObject> {
    const obj = this.checkBody(type, version, namespace, body);
    if (obj.metadata!.name !== undefined && obj.metadata!.name !== name)
      throw badRequest(
        `the name of the object (${obj.metadata!.name}) does not match the name on the URL (${name})`,
      );
    obj.metadata!.name = name;
    const key = typeKey(type.group, type.plural);
    const ns = type.namespaced ? namespace : undefined;
    const existing = this.store.get(key, ns, name);
    if (!existing) throw notFound(type.group, type.plural, name);
    const sentRv = obj.metadata!.resourceVersion;
    if (!sentRv && type.requireResourceVersionOnUpdate)
      throw invalid(type.kind, type.group, name, [
        {
          reason: 'FieldValueInvalid',
          message: 'Invalid value: 0x0: must be specified for an update',
          field: 'metadata.resourceVersion',
        },
      ]);
    if (sentRv && sentRv !== existing.metadata!.resourceVersion)
      throw conflict(type.group, type.plural, name, STALE);
    if (obj.metadata!.uid && obj.metadata!.uid !== existing.metadata!.uid)
      throw conflict(
        type.group,
        type.plural,
        name,
        `Precondition failed: UID in precondition: ${obj.metadata!.uid}, UID in object meta: ${existing.metadata!.uid}`,
      );
    return this.commitUpdate(type, version, existing, obj, subresource, ctx);
  }

  async patch(
    type: ResourceType,
    version: string,
    namespace: string | undefined,
    name: string,
    contentType: string,
    patchText: string,
    subresource: string | undefined,
    ctx: RequestContext,
  ): Promise<KubeObject> {
    const key = typeKey(type.group, type.plural);
    const ns = type.namespaced ? namespace : undefined;
    const ct = contentType.split(';')[0]!.trim().toLowerCase();
    const existing = this.store.get(key, ns, name);
    if (ct === 'application/apply-patch+yaml') {
      // server-side apply, simplified: create when missing, otherwise a merge patch (no field ownership)
      let applied: unknown;
      try {
        applied = parseYaml(patchText);
      } catch (err) {
        throw badRequest(`error decoding YAML: ${(err as Error).message}`);
      }
      if (!existing) {
        if (subresource) throw notFound(type.group, type.plural, name);
        const obj = this.checkBody(type, version, namespace, applied);
        obj.metadata!.name ??= name;
        return this.create(type, version, namespace, obj, ctx);
      }
      return this.commitUpdate(
        type,
        version,
        existing,
        this.patched(type, version, existing, 'merge', applied),
        subresource,
        ctx,
      );
    }
    if (!existing) throw notFound(type.group, type.plural, name);
    let parsed: unknown;
    try {
      parsed = JSON.parse(patchText);
    } catch (err) {
      throw badRequest(`error decoding patch: ${(err as Error).message}`);
    }
    let kind: 'json' | 'merge' | 'strategic';
    if (ct === 'application/json-patch+json') kind = 'json';
    else if (ct === 'application/merge-patch+json') kind = 'merge';
    // kube-apiserver answers 415 to strategic merge on custom resources; here it is treated as a merge patch
    else if (ct === 'application/strategic-merge-patch+json') kind = type.crd ? 'merge' : 'strategic';
    else
      throw new ApiError(
        415,
        'UnsupportedMediaType',
        `the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml`,
      );
    const next = this.patched(type, version, existing, kind, parsed);
    const sentRv = next.metadata?.resourceVersion;
    if (sentRv && sentRv !== existing.metadata!.resourceVersion)
      throw conflict(type.group, type.plural, name, STALE);
    return this.commitUpdate(type, version, existing, next, subresource, ctx);
  }

  private patched(
    type: ResourceType,
    version: string,
    existing: KubeObject,
    kind: 'json' | 'merge' | 'strategic',
    patch: unknown,
  ) {
    const base = this.present(type, version, existing);
    let out: unknown;
    if (kind === 'json') out = applyJsonPatch(base, patch);
    else if (!isObject(patch)) throw badRequest('a merge patch must be a JSON object');
    else out = kind === 'merge' ? applyMergePatch(base, patch) : applyStrategicMergePatch(base, patch);
    if (!isObject(out)) throw new ApiError(422, 'Invalid', 'the patch result is not an object');
    const o = out as KubeObject;
    if (!isObject(o.metadata)) o.metadata = {};
    if (o.metadata!.name !== existing.metadata!.name)
      throw badRequest(
        `the name of the object (${o.metadata!.name}) does not match the name on the URL (${existing.metadata!.name})`,
      );
    return o;
  }

  /** The shared tail of PUT and PATCH: status separation, admission, schema, generation, finalizers. */
  private async commitUpdate(
    type: ResourceType,
    version: string,
    existing: KubeObject,
    incoming: KubeObject,
    subresource: string | undefined,
    ctx: RequestContext,
  ): Promise<KubeObject> {
    if (subresource && subresource !== 'status')
      throw notFound(type.group, `${type.plural}/${subresource}`, existing.metadata!.name!);
    if (subresource === 'status' && !type.statusSubresource)
      throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');
    const key = typeKey(type.group, type.plural);
    let next: KubeObject;
    if (subresource === 'status') {
      // PUT/PATCH .../status: everything but status stays as stored
      next = structuredClone(existing);
      if (incoming.status === undefined) delete next.status;
      else next.status = structuredClone(incoming.status);
    } else {
      next = structuredClone(incoming);
      if (type.statusSubresource) {
        if (existing.status === undefined) delete next.status;
        else next.status = structuredClone(existing.status);
      }
      const m = next.metadata!;
      const em = existing.metadata!;
      m.namespace = em.namespace;
      m.uid = em.uid;
      m.creationTimestamp = em.creationTimestamp;
      if (em.generateName) m.generateName = em.generateName;
      m.deletionTimestamp = em.deletionTimestamp;
      m.deletionGracePeriodSeconds = em.deletionGracePeriodSeconds;
      if (m.deletionTimestamp === undefined) delete m.deletionTimestamp;
      if (m.deletionGracePeriodSeconds === undefined) delete m.deletionGracePeriodSeconds;
      delete m.managedFields;
      if (em.deletionTimestamp) {
        const added = (m.finalizers ?? []).filter((f) => !(em.finalizers ?? []).includes(f));
        if (added.length)
          throw invalid(type.kind, type.group, em.name!, [
            {
              reason: 'FieldValueForbidden',
              message: `Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers ${JSON.stringify(added)}`,
              field: 'metadata.finalizers',
            },
          ]);
      }
    }
    next.metadata!.generation = existing.metadata!.generation;
    next.metadata!.resourceVersion = existing.metadata!.resourceVersion;
    next.apiVersion = existing.apiVersion;
    next.kind = existing.kind;
    this.defaultsForType(type, next, existing);
    if (type.crd) this.schemaCheck(type, version, next, ctx, false);
    if (!ctx.skipAdmission) {
      next = await this.mutate('UPDATE', type, version, next, existing, ctx, subresource);
      this.restoreSystemFields(next, existing);
    }
    this.validateMeta(type, next);
    if (type.crd) this.schemaCheck(type, version, next, ctx, true);
    if (isCrdType(type)) resourceTypeFromCrd(next); // throws 422 like kube-apiserver
    if (!ctx.skipAdmission) await this.validate('UPDATE', type, version, next, existing, ctx, subresource);

    if (type.generation && specChanged(type, existing, next))
      next.metadata!.generation = (existing.metadata!.generation ?? 0) + 1;
    if (isCrdType(type)) crdStatus(next);
    // an update that changes nothing keeps the resourceVersion and sends no event, like kube-apiserver
    if (deepEqual(withoutRv(next), withoutRv(existing))) return this.present(type, version, existing);
    if (ctx.dryRun) return this.present(type, version, next);
    // webhooks are awaited above: a write that landed meanwhile makes this one stale, as in etcd
    const current = this.store.get(key, existing.metadata!.namespace, existing.metadata!.name!);
    if (current?.metadata?.resourceVersion !== existing.metadata!.resourceVersion)
      throw conflict(type.group, type.plural, existing.metadata!.name!, STALE);

    if (next.metadata!.deletionTimestamp && (next.metadata!.finalizers ?? []).length === 0) {
      next.metadata!.resourceVersion = existing.metadata!.resourceVersion;
      const gone = this.removeNow(type, next);
      return this.present(type, version, gone);
    }
    next.metadata!.resourceVersion = String(this.store.nextResourceVersion());
    this.store.write(key, 'MODIFIED', next, existing);
    if (isCrdType(type)) this.registry.applyCrd(next);
    return this.present(type, version, next);
  }

  // ---------------------------------------------------------------- delete

  async delete(
    type: ResourceType,
    version: string,
    namespace: string | undefined,
    name: string,
    options: DeleteOptions,
    ctx: RequestContext,
  ): Promise<KubeObject> {
    const key = typeKey(type.group, type.plural);
    const existing = this.store.get(key, type.namespaced ? namespace : undefined, name);
    if (!existing) throw notFound(type.group, type.plural, name);
    const pre = options.preconditions ?? {};
    if (pre.uid && pre.uid !== existing.metadata!.uid)
      throw conflict(
        type.group,
        type.plural,
        name,
        `Precondition failed: UID in precondition: ${pre.uid}, UID in object meta: ${existing.metadata!.uid}`,
      );
    if (pre.resourceVersion && pre.resourceVersion !== existing.metadata!.resourceVersion)
      throw conflict(
        type.group,
        type.plural,
        name,
        `Precondition failed: ResourceVersion in precondition: ${pre.resourceVersion}, ResourceVersion in object meta: ${existing.metadata!.resourceVersion}`,
      );
    if (!ctx.skipAdmission) await this.validate('DELETE', type, version, undefined, existing, ctx);
    const deletedAnswer = (obj: KubeObject) =>
      type.returnDeletedObject
        ? this.present(type, version, obj)
        : (statusObject('Success', 200, '', '', {
            name,
            group: type.group,
            kind: type.plural,
            uid: existing.metadata!.uid,
          }) as KubeObject);
    if (ctx.dryRun) return deletedAnswer(existing);

    const isNamespace = type.group === '' && type.plural === 'namespaces';
    if ((existing.metadata!.finalizers ?? []).length > 0 || isNamespace) {
      // graceful: mark, let finalizers (or the namespace's contents) go first
      let marked = existing;
      if (!existing.metadata!.deletionTimestamp) {
        marked = structuredClone(existing);
        marked.metadata!.deletionTimestamp = now();
        marked.metadata!.deletionGracePeriodSeconds = 0;
        if (isNamespace)
          marked.status = { ...(isObject(marked.status) ? marked.status : {}), phase: 'Terminating' };
        marked.metadata!.resourceVersion = String(this.store.nextResourceVersion());
        this.store.write(key, 'MODIFIED', marked, existing);
      }
      if (isNamespace) {
        this.emptyNamespace(name);
        const after = this.store.get(key, undefined, name);
        if (after && (after.metadata!.finalizers ?? []).length === 0 && this.namespaceEmpty(name))
          return deletedAnswer(this.removeNow(type, after));
        return this.present(type, version, after ?? marked);
      }
      return this.present(type, version, marked);
    }
    return deletedAnswer(this.removeNow(type, existing));
  }

  async deleteCollection(
    type: ResourceType,
    version: string,
    namespace: string | undefined,
    o: ListOptions,
    options: DeleteOptions,
    ctx: RequestContext,
  ): Promise<KubeObject> {
    const list = this.list(type, version, namespace, {
      labelSelector: o.labelSelector,
      fieldSelector: o.fieldSelector,
    });
    const items: KubeObject[] = [];
    for (const it of list.items as KubeObject[]) {
      try {
        items.push(
          await this.delete(type, version, it.metadata?.namespace, it.metadata!.name!, options, ctx),
        );
      } catch (err) {
        if (!(err instanceof ApiError && err.code === 404)) throw err;
      }
    }
    return { ...list, items };
  }

  /** Removes an object now, then what that unblocks: owned objects (GC) and a terminating namespace. */
  private removeNow(type: ResourceType, obj: KubeObject): KubeObject {
    const key = typeKey(type.group, type.plural);
    const gone = this.store.remove(key, obj);
    if (isCrdType(type)) {
      const spec = (obj.spec ?? {}) as Record<string, any>;
      this.store.removeType(typeKey(spec.group, spec.names?.plural));
      this.registry.removeCrd(obj);
    }
    this.collectDependents(obj.metadata!.uid!);
    const ns = obj.metadata?.namespace;
    if (ns) this.finishNamespaceIfEmpty(ns);
    return gone;
  }

  /** Garbage collection, reduced: objects all of whose owners are gone are deleted (background policy). */
  private collectDependents(uid: string, depth = 0): void {
    if (depth > 20) return;
    const live = new Set<string>();
    const candidates: { type: ResourceType; obj: KubeObject }[] = [];
    for (const t of this.registry.all()) {
      for (const o of this.store.list(typeKey(t.group, t.plural))) {
        live.add(o.metadata!.uid!);
        if ((o.metadata?.ownerReferences ?? []).some((r) => r.uid === uid))
          candidates.push({ type: t, obj: o });
      }
    }
    for (const { type, obj } of candidates) {
      if ((obj.metadata!.ownerReferences ?? []).some((r) => live.has(r.uid))) continue;
      if ((obj.metadata!.finalizers ?? []).length > 0) {
        if (!obj.metadata!.deletionTimestamp) {
          const marked = structuredClone(obj);
          marked.metadata!.deletionTimestamp = now();
          marked.metadata!.resourceVersion = String(this.store.nextResourceVersion());
          this.store.write(typeKey(type.group, type.plural), 'MODIFIED', marked, obj);
        }
        continue;
      }
      this.store.remove(typeKey(type.group, type.plural), obj);
      this.collectDependents(obj.metadata!.uid!, depth + 1);
    }
  }

  private emptyNamespace(ns: string): void {
    for (const t of this.registry.all()) {
      if (!t.namespaced) continue;
      const key = typeKey(t.group, t.plural);
      for (const o of this.store.list(key, ns)) {
        if ((o.metadata!.finalizers ?? []).length > 0) {
          if (!o.metadata!.deletionTimestamp) {
            const marked = structuredClone(o);
            marked.metadata!.deletionTimestamp = now();
            marked.metadata!.resourceVersion = String(this.store.nextResourceVersion());
            this.store.write(key, 'MODIFIED', marked, o);
          }
        } else this.store.remove(key, o);
      }
    }
  }

  private namespaceEmpty(ns: string): boolean {
    return this.registry
      .all()
      .every((t) => !t.namespaced || this.store.list(typeKey(t.group, t.plural), ns).length === 0);
  }

  private finishNamespaceIfEmpty(ns: string): void {
    const key = typeKey('', 'namespaces');
    const nsObj = this.store.get(key, undefined, ns);
    if (
      nsObj?.metadata?.deletionTimestamp &&
      (nsObj.metadata.finalizers ?? []).length === 0 &&
      this.namespaceEmpty(ns)
    )
      this.store.remove(key, nsObj);
  }

  // ---------------------------------------------------------------- helpers

  /** Parses and checks the request body's kind, apiVersion and namespace against the URL. */
  private checkBody(
    type: ResourceType,
    version: string,
    namespace: string | undefined,
    body: unknown,
  ): KubeObject {
    if (!isObject(body)) throw badRequest('the request body must be a JSON object');
    const obj = structuredClone(body) as KubeObject;
    const want = type.group ? `${type.group}/${version}` : version;
    obj.apiVersion ??= want;
    obj.kind ??= type.kind;
    const [g] = splitApiVersion(obj.apiVersion);
    if (obj.kind !== type.kind || g !== type.group)
      throw badRequest(
        `the API version in the data (${obj.apiVersion}) does not match the expected API version (${want})`,
      );
    obj.apiVersion = want;
    if (obj.metadata !== undefined && !isObject(obj.metadata)) throw badRequest('metadata must be an object');
    obj.metadata ??= {};
    const meta = obj.metadata!;
    if (type.namespaced) {
      if (!namespace) throw badRequest('a namespaced resource needs a namespace in the request path');
      if (meta.namespace && meta.namespace !== namespace)
        throw badRequest(
          'the namespace of the provided object does not match the namespace sent on the request',
        );
      meta.namespace = namespace;
    } else delete meta.namespace;
    return obj;
  }

  private checkNamespaceOpen(ns: string): void {
    const nsObj = this.store.get(typeKey('', 'namespaces'), undefined, ns);
    if (!nsObj) {
      if (this.opts.requireNamespaces) throw notFound('', 'namespaces', ns);
      return;
    }
    if (nsObj.metadata?.deletionTimestamp)
      throw new ApiError(
        403,
        'Forbidden',
        `unable to create new content in namespace ${ns} because it is being terminated`,
      );
  }

  private validateMeta(type: ResourceType, obj: KubeObject): void {
    const m = obj.metadata!;
    const causes: StatusCause[] = [];
    const name = m.name ?? '';
    const re = type.plural === 'namespaces' ? DNS1123_LABEL : DNS1123_SUBDOMAIN;
    if (!re.test(name) || name.length > 253)
      causes.push({
        reason: 'FieldValueInvalid',
        message: `Invalid value: "${name}": a lowercase RFC 1123 ${type.plural === 'namespaces' ? 'label' : 'subdomain'} must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character`,
        field: 'metadata.name',
      });
    for (const [k, v] of Object.entries(m.labels ?? {})) {
      if (typeof v !== 'string' || v.length > 63 || !/^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/.test(v))
        causes.push({
          reason: 'FieldValueInvalid',
          message: `Invalid value: ${JSON.stringify(v)}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.'`,
          field: `metadata.labels`,
        });
      if (
        !/^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/.test(
          k,
        )
      )
        causes.push({
          reason: 'FieldValueInvalid',
          message: `Invalid value: "${k}": name part must consist of alphanumeric characters, '-', '_' or '.'`,
          field: 'metadata.labels',
        });
    }
    for (const [k, v] of Object.entries(m.annotations ?? {}))
      if (typeof v !== 'string')
        causes.push({
          reason: 'FieldValueTypeInvalid',
          message: `Invalid value: annotation values must be strings`,
          field: `metadata.annotations.${k}`,
        });
    if (causes.length) throw invalid(type.kind, type.group, name, causes);
  }

  private schemaCheck(
    type: ResourceType,
    version: string,
    obj: KubeObject,
    ctx: RequestContext,
    final: boolean,
  ): void {
    const schema = type.crd!.schemas[version] as Record<string, any> | undefined;
    const checked = this.validator.check(
      `${type.crd!.name}/${version}`,
      schema,
      obj as Record<string, unknown>,
    );
    ctx.pruned ??= new Set();
    for (const p of checked.pruned) ctx.pruned.add(p);
    if (!final) return;
    const causes = checked.causes;
    const pruned = [...ctx.pruned];
    if (pruned.length) {
      if (ctx.fieldValidation === 'Strict')
        throw new ApiError(
          400,
          'BadRequest',
          `.${pruned.map((p) => `${p}: field not declared in schema`).join(', ')}`,
          {
            causes: pruned.map((p) => ({
              reason: 'FieldValueInvalid',
              message: 'field not declared in schema',
              field: p,
            })),
          },
        );
      if (ctx.fieldValidation !== 'Ignore') for (const p of pruned) ctx.warnings.push(`unknown field "${p}"`);
    }
    if (causes.length) throw invalid(type.kind, type.group, obj.metadata?.name ?? '', causes);
  }

  /** What kube-apiserver's registry strategies fill in for the built-in types tests use. */
  private defaultsForType(type: ResourceType, obj: KubeObject, old: KubeObject | undefined): void {
    if (type.group === '' && type.kind === 'Secret') {
      if (isObject(obj.stringData)) {
        const data: Record<string, string> = isObject(obj.data) ? (obj.data as Record<string, string>) : {};
        for (const [k, v] of Object.entries(obj.stringData))
          data[k] = Buffer.from(String(v), 'utf8').toString('base64');
        obj.data = data;
      }
      delete obj.stringData;
      obj.type ??= 'Opaque';
    }
    if (type.group === '' && type.kind === 'Namespace') {
      obj.metadata!.labels = {
        ...(obj.metadata!.labels ?? {}),
        'kubernetes.io/metadata.name': obj.metadata!.name ?? '',
      };
      if (!old) obj.status = { phase: 'Active' };
      obj.spec ??= { finalizers: ['kubernetes'] };
    }
    if (type.group === '' && type.kind === 'Pod' && !old)
      obj.status = { phase: 'Pending', qosClass: 'BestEffort' };
  }

  private restoreSystemFields(next: KubeObject, existing: KubeObject): void {
    const m = next.metadata ?? {};
    next.metadata = m;
    const em = existing.metadata!;
    m.uid = em.uid;
    m.creationTimestamp = em.creationTimestamp;
    m.resourceVersion = em.resourceVersion;
    m.generation = em.generation;
  }

  /** A CRD must be valid and must not take over a built-in resource's name. */
  private checkCrd(crd: KubeObject): void {
    const t = resourceTypeFromCrd(crd);
    const clash = this.registry.all().find((x) => x.group === t.group && x.plural === t.plural && !x.crd);
    if (clash) throw new ApiError(409, 'Conflict', `${t.plural}.${t.group} is served by a built-in resource`);
  }

  private namespaceLabels(ns: string | undefined): Record<string, string> | undefined {
    return ns ? this.store.get(typeKey('', 'namespaces'), undefined, ns)?.metadata?.labels : undefined;
  }

  private configs(kind: 'mutatingwebhookconfigurations' | 'validatingwebhookconfigurations'): KubeObject[] {
    return this.store.list(typeKey('admissionregistration.k8s.io', kind));
  }

  private async mutate(
    op: Operation,
    type: ResourceType,
    version: string,
    obj: KubeObject,
    old: KubeObject | undefined,
    ctx: RequestContext,
    subresource?: string,
  ): Promise<KubeObject> {
    const configs = this.configs('mutatingwebhookconfigurations');
    if (configs.length === 0) return obj;
    const out = await this.admission.run('mutating', configs, {
      operation: op,
      type,
      version,
      subresource,
      namespace: obj.metadata?.namespace,
      name: obj.metadata?.name ?? '',
      object: this.present(type, version, obj),
      oldObject: old ? this.present(type, version, old) : undefined,
      user: ctx.user,
      dryRun: ctx.dryRun ?? false,
      namespaceLabels: this.namespaceLabels(obj.metadata?.namespace),
    });
    ctx.warnings.push(...out.warnings);
    const next = out.object;
    if (!isObject(next) || !isObject(next.metadata))
      throw new ApiError(500, 'InternalError', 'Internal error occurred: a webhook patch removed metadata');
    if (
      next.metadata.namespace !== obj.metadata?.namespace ||
      (obj.metadata?.name && next.metadata.name !== obj.metadata.name)
    )
      throw new ApiError(
        500,
        'InternalError',
        'Internal error occurred: a webhook patch changed the name or namespace',
      );
    return next as KubeObject;
  }

  private async validate(
    op: Operation,
    type: ResourceType,
    version: string,
    obj: KubeObject | undefined,
    old: KubeObject | undefined,
    ctx: RequestContext,
    subresource?: string,
  ): Promise<void> {
    const configs = this.configs('validatingwebhookconfigurations');
    if (configs.length === 0) return;
    const ref = obj ?? old!;
    const out = await this.admission.run('validating', configs, {
      operation: op,
      type,
      version,
      subresource,
      namespace: ref.metadata?.namespace,
      name: ref.metadata?.name ?? '',
      object: obj ? this.present(type, version, obj) : undefined,
      oldObject: old ? this.present(type, version, old) : undefined,
      user: ctx.user,
      dryRun: ctx.dryRun ?? false,
      namespaceLabels: this.namespaceLabels(ref.metadata?.namespace),
    });
    ctx.warnings.push(...out.warnings);
  }
}

const isCrdType = (t: ResourceType) =>
  t.group === 'apiextensions.k8s.io' && t.plural === 'customresourcedefinitions';

/** Established/NamesAccepted as the CRD controllers of kube-apiserver set them (at once here). */
function crdStatus(crd: KubeObject): void {
  const spec = (crd.spec ?? {}) as Record<string, any>;
  const prev = isObject(crd.status) ? crd.status : {};
  const storage = (spec.versions ?? []).filter((v: any) => v.storage).map((v: any) => v.name);
  const t = now();
  crd.status = {
    ...prev,
    acceptedNames: { ...(spec.names ?? {}) },
    conditions:
      Array.isArray(prev.conditions) && prev.conditions.length
        ? prev.conditions
        : [
            {
              type: 'NamesAccepted',
              status: 'True',
              reason: 'NoConflicts',
              message: 'no conflicts found',
              lastTransitionTime: t,
            },
            {
              type: 'Established',
              status: 'True',
              reason: 'InitialNamesAccepted',
              message: 'the initial names have been accepted',
              lastTransitionTime: t,
            },
          ],
    storedVersions: [
      ...new Set([...(Array.isArray(prev.storedVersions) ? prev.storedVersions : []), ...storage]),
    ],
  };
}

/** Did anything that counts for metadata.generation change (not metadata; not status when it is a subresource)? */
function specChanged(type: ResourceType, a: KubeObject, b: KubeObject): boolean {
  const strip = (o: KubeObject) => {
    const { metadata: _m, status, apiVersion: _a, kind: _k, ...rest } = o;
    return type.statusSubresource ? rest : { ...rest, status };
  };
  return !deepEqual(strip(a), strip(b));
}

function withoutRv(o: KubeObject): KubeObject {
  const c = structuredClone(o);
  delete c.metadata!.resourceVersion;
  return JSON.parse(JSON.stringify(c)); // drop undefined-valued keys
}

const now = () => new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');

function randomSuffix(): string {
  const alphabet = 'bcdfghjklmnpqrstvwxz2456789';
  return [...randomBytes(5)].map((b) => alphabet[b % alphabet.length]).join('');
}
