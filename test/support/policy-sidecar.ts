/**
 * A governed sidecar for a test, in one call: the policy comes from the test's own YAML (the contract's
 * resources), the sidecar listens on a free port and relays to the test server without TLS, and logs
 * nowhere. Attack and client tests use it instead of each spelling out the same start-up.
 */
import type { CompiledPolicy } from '../../api/compiled.js';
import { loadPolicyFiles } from '../../policy/load.js';
import { type Sidecar, type SidecarOptions, startSidecar } from '../../sidecar/runtime.js';
import type { PgServer } from './pg-cluster.js';

/** Compiles YAML documents (one DatabasePolicy and its MaskingRules, Secrets ...); throws on errors. */
export function compileYaml(text: string, name = 'policy.yaml'): CompiledPolicy {
  const r = loadPolicyFiles([{ name, text }]);
  if (!r.ok) throw new Error(r.errors.join('\n'));
  return r.compiled;
}

/** A sidecar enforcing `policy` in front of `server` (options in `extra` add to or replace these). */
export function startPolicySidecar(
  server: Pick<PgServer, 'host' | 'port'>,
  policy: CompiledPolicy,
  extra: Partial<SidecarOptions> = {},
): Promise<Sidecar> {
  return startSidecar({
    listen: { host: '127.0.0.1', port: 0 },
    upstream: { host: server.host, port: server.port, sslmode: 'disable' },
    policyFiles: [],
    initialPolicy: policy,
    logger: { log: () => {} },
    ...extra,
  });
}
