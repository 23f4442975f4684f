/**
 * User mistakes, told in one line: what went wrong, where (a URL without its password), and what to
 * try. A CliError is printed as `dbguard <command>: <message>` with exit code 1, never with a stack
 * trace (cli/main.ts); a UsageError (flags.ts) exits 2.
 */

export class CliError extends Error {
  override name = 'CliError';
}

/** The URL with its password left out: `postgres://app@db:5432/app`. Not a URL: returned as given. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (!u.password) return url;
    u.password = '';
    return u.toString();
  } catch {
    return url.replace(/:[^:@/]*@/, '@');
  }
}

/** Is it a postgres:// URL? Else a UsageError-worthy explanation (e.g. `127.0.0.1:5432` alone). */
export function postgresUrlProblem(url: string): string | undefined {
  const shape = 'expected a URL like postgres://USER:PASSWORD@HOST:5432/DATABASE';
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return `${shape} (got '${redactUrl(url)}')`;
  }
  // `127.0.0.1:5432` parses as a URL with the scheme `127.0.0.1:`; `localhost:5432` as `localhost:`.
  if (u.protocol !== 'postgres:' && u.protocol !== 'postgresql:') return `${shape} (got '${redactUrl(url)}')`;
  if (!u.hostname) return `${shape}: the host is missing (got '${redactUrl(url)}')`;
  return undefined;
}

interface PgLikeError {
  code?: string;
  message?: string;
  address?: string;
  port?: number;
  hostname?: string;
}

/** Why a connection to `url` failed, for a person: one line, with what to try. */
export function explainConnectFailure(url: string, err: unknown): string {
  const e = (err ?? {}) as PgLikeError;
  const msg = String(e.message ?? err);
  let host = '';
  try {
    const u = new URL(url);
    host = `${u.hostname}:${u.port || 5432}`;
  } catch {
    /* not a URL: already refused by postgresUrlProblem */
  }
  const why = ((): string => {
    switch (e.code) {
      case 'ECONNREFUSED':
        return `nothing accepts connections at ${host} (connection refused); is PostgreSQL running there, and are the host and port in the URL right?`;
      case 'ENOTFOUND':
      case 'EAI_AGAIN':
        return `host '${e.hostname ?? host}' not found; check the host in the URL`;
      case 'ETIMEDOUT':
      case 'EHOSTUNREACH':
      case 'ENETUNREACH':
        return `cannot reach ${host} (${e.code}); check the host, the port and the network`;
      case '28P01':
        return `${msg}; check the password: in the URL (postgres://USER:PASSWORD@HOST/DB, percent-encoded) or in PGPASSWORD`;
      case '28000':
        return `${msg}; the server's pg_hba.conf refuses this user, database, address or sslmode`;
      case '3D000':
        return `${msg}; name an existing database in the URL's path`;
      case '57P03':
        return `${msg}; try again in a moment`;
    }
    if (/client password must be a string|password must be a string|no password supplied/i.test(msg)) {
      return 'the server asks for a password and none was given; put it in the URL (postgres://USER:PASSWORD@HOST/DB) or set PGPASSWORD';
    }
    if (/timeout|timed out/i.test(msg))
      return `no answer from ${host} in time; check the host, the port and the network`;
    if (/does not support SSL/i.test(msg)) return `${msg}; use sslmode=prefer or sslmode=disable in the URL`;
    return msg.split('\n')[0]!;
  })();
  return `cannot connect to ${redactUrl(url)}: ${why}`;
}

/** A file the user named could not be read: one line naming the flag and the file. */
export function unreadable(flag: string, file: string, err: unknown): CliError {
  const code = (err as NodeJS.ErrnoException)?.code;
  const why =
    code === 'ENOENT'
      ? 'no such file'
      : code === 'EACCES'
        ? 'permission denied'
        : code === 'EISDIR'
          ? 'is a directory'
          : String((err as Error)?.message ?? err);
  return new CliError(`${flag} ${file}: ${why}`);
}
