/**
 * Test certificates made with openssl: a CA, and certificates it signs. Keys are unencrypted, valid
 * for one day; files go to `dir` as `<name>.crt` / `<name>.key`.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

export interface CertFiles {
  /** path of the PEM certificate */
  cert: string;
  /** path of the PEM private key */
  key: string;
}

function openssl(args: string[]): void {
  execFileSync('openssl', args, { stdio: 'pipe' });
}

/** A self-signed CA called `cn`. */
export function makeCa(dir: string, name: string, cn: string): CertFiles {
  const f = (x: string) => path.join(dir, `${name}.${x}`);
  openssl(
    ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', `/CN=${cn}`].concat([
      '-keyout',
      f('key'),
      '-out',
      f('crt'),
    ]),
  );
  return { cert: f('crt'), key: f('key') };
}

/** A certificate for `san` (e.g. `DNS:localhost,IP:127.0.0.1`) signed by `ca`. */
export function issueCert(dir: string, name: string, cn: string, san: string, ca: CertFiles): CertFiles {
  const f = (x: string) => path.join(dir, `${name}.${x}`);
  openssl([
    'req',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-subj',
    `/CN=${cn}`,
    '-keyout',
    f('key'),
    '-out',
    f('csr'),
  ]);
  fs.writeFileSync(f('ext'), `subjectAltName=${san}\n`);
  openssl([
    'x509',
    '-req',
    '-in',
    f('csr'),
    '-CA',
    ca.cert,
    '-CAkey',
    ca.key,
    '-CAcreateserial',
    '-days',
    '1',
    '-extfile',
    f('ext'),
    '-out',
    f('crt'),
  ]);
  return { cert: f('crt'), key: f('key') };
}

/** A server key PostgreSQL accepts: mode 0600, owned by the server's user when the tests run as root. */
export function serverKeyFor(files: CertFiles): void {
  fs.chmodSync(files.key, 0o600);
  if (process.getuid?.() === 0) execFileSync('chown', ['postgres:postgres', files.key, files.cert]);
}
