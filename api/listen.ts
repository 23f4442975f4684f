/**
 * Listen addresses as every command takes them: `HOST:PORT`, `:PORT`, IPv6 as `[::1]:9090`, and,
 * where `barePort` allows it, just `PORT`. An empty host is `defaultHost`.
 */
export function parseListen(
  listen: string,
  opts: { defaultHost: string; barePort?: boolean },
): { host: string; port: number } {
  const m =
    /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(listen) ?? (opts.barePort ? /^()()(\d+)$/.exec(listen) : null);
  const port = m ? Number(m[3]) : Number.NaN;
  if (!m || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`invalid listen address '${listen}': expected HOST:PORT, e.g. 127.0.0.1:9090`);
  }
  return { host: m[1] || m[2] || opts.defaultHost, port };
}
