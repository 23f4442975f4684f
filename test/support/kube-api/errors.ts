/** Kubernetes `Status` failures: every error the server answers is one of these, never a bare string. */

export interface StatusCause {
  reason?: string;
  message?: string;
  field?: string;
}

export interface StatusDetails {
  name?: string;
  group?: string;
  kind?: string;
  uid?: string;
  causes?: StatusCause[];
  retryAfterSeconds?: number;
}

export class ApiError extends Error {
  constructor(
    readonly code: number,
    readonly reason: string,
    message: string,
    readonly details?: StatusDetails,
  ) {
    super(message);
  }

  toStatus() {
    return statusObject('Failure', this.code, this.reason, this.message, this.details);
  }
}

export function statusObject(
  status: 'Success' | 'Failure',
  code: number,
  reason: string,
  message: string,
  details?: StatusDetails,
) {
  const out: Record<string, unknown> = { kind: 'Status', apiVersion: 'v1', metadata: {}, status, code };
  if (message) out.message = message;
  if (reason) out.reason = reason;
  if (details) out.details = details;
  return out;
}

/** `pods "x"` or `databasepolicies.dbguard.io "x"`, the way kube-apiserver names a resource in messages. */
export function qualified(group: string, plural: string): string {
  return group ? `${plural}.${group}` : plural;
}

export const notFound = (group: string, plural: string, name: string) =>
  new ApiError(404, 'NotFound', `${qualified(group, plural)} "${name}" not found`, {
    name,
    group,
    kind: plural,
  });

export const alreadyExists = (group: string, plural: string, name: string) =>
  new ApiError(409, 'AlreadyExists', `${qualified(group, plural)} "${name}" already exists`, {
    name,
    group,
    kind: plural,
  });

export const conflict = (group: string, plural: string, name: string, why: string) =>
  new ApiError(
    409,
    'Conflict',
    `Operation cannot be fulfilled on ${qualified(group, plural)} "${name}": ${why}`,
    {
      name,
      group,
      kind: plural,
    },
  );

export const STALE =
  'the object has been modified; please apply your changes to the latest version and try again';

export const badRequest = (message: string) => new ApiError(400, 'BadRequest', message);

export const resourceNotFound = () =>
  new ApiError(404, 'NotFound', 'the server could not find the requested resource');

export const methodNotAllowed = (method: string) =>
  new ApiError(
    405,
    'MethodNotAllowed',
    `the server does not allow this method on the requested resource (${method})`,
  );

/** 422 Invalid with one cause per field: `Kind.group "name" is invalid: field: message, ...`. */
export function invalid(kind: string, group: string, name: string, causes: StatusCause[]): ApiError {
  const qualifiedKind = group ? `${kind}.${group}` : kind;
  const list = causes.map((c) => (c.field ? `${c.field}: ${c.message}` : (c.message ?? ''))).join(', ');
  const message =
    causes.length === 1
      ? `${qualifiedKind} "${name}" is invalid: ${list}`
      : `${qualifiedKind} "${name}" is invalid: [${list}]`;
  return new ApiError(422, 'Invalid', message, { name, group, kind, causes });
}
