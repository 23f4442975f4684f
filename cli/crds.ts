/**
 * `dbguard crds`: print dbguard's CustomResourceDefinitions as multi-document YAML, for
 * `dbguard crds | kubectl apply --server-side -f -`. The same text as the files in `crds/`.
 */
import { crdsYaml } from '../api/crds.js';
import { type FlagSpec, helpText, parseFlags, UsageError } from './flags.js';

const FLAGS: FlagSpec[] = [{ name: 'help', boolean: true, help: 'show this help' }];

export async function run(
  argv: string[],
  out: { write(s: string): unknown } = process.stdout,
): Promise<number> {
  const flags = parseFlags(argv, FLAGS, {});
  if (flags.has('help')) {
    out.write(
      `${helpText('crds', 'Print the CustomResourceDefinitions (apply with: dbguard crds | kubectl apply --server-side -f -).', FLAGS)}\n`,
    );
    return 0;
  }
  if (flags.positionals.length)
    throw new UsageError(`crds takes no arguments (got ${flags.positionals.join(' ')})`);
  out.write(crdsYaml());
  return 0;
}
