/**
 * Test certificates made with the `openssl` CLI (node:crypto makes keys but not X.509 certificates):
 * a throwaway CA and leaf certificates it signs, for the API server and for webhook servers in tests.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface TestCa {
  certPem: string;
  keyPem: string;
  /** a leaf certificate for these DNS names / IP addresses, signed by this CA, valid for serverAuth */
  issue(hosts: string[], commonName?: string): { certPem: string; keyPem: string };
}

function openssl(dir: string, args: string[]): void {
  try {
    execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'], timeout: 20_000 });
  } catch (err) {
    const stderr = (err as { stderr?: Buffer }).stderr?.toString() ?? '';
    throw new Error(`openssl ${args[0]} failed: ${stderr || (err as Error).message}`);
  }
}

/** A new CA (EC P-256, valid 2 days). Needs the `openssl` CLI on PATH. */
export function createTestCa(commonName = 'dbguard-test-ca'): TestCa {
  const dir = mkdtempSync(join(tmpdir(), 'kube-api-ca-'));
  try {
    openssl(dir, [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-keyout',
      'ca.key',
      '-out',
      'ca.crt',
      '-days',
      '2',
      '-subj',
      `/CN=${commonName}`,
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
    ]);
    const certPem = readFileSync(join(dir, 'ca.crt'), 'utf8');
    const keyPem = readFileSync(join(dir, 'ca.key'), 'utf8');
    return { certPem, keyPem, issue: (hosts, cn) => issueLeaf(certPem, keyPem, hosts, cn) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function issueLeaf(caCert: string, caKey: string, hosts: string[], commonName?: string) {
  if (hosts.length === 0) throw new Error('issue(): give at least one host name or IP address');
  const dir = mkdtempSync(join(tmpdir(), 'kube-api-leaf-'));
  try {
    writeFileSync(join(dir, 'ca.crt'), caCert);
    writeFileSync(join(dir, 'ca.key'), caKey, { mode: 0o600 });
    const san = hosts.map((h) => (isIP(h) ? `IP:${h}` : `DNS:${h}`)).join(',');
    writeFileSync(
      join(dir, 'ext.cnf'),
      `basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n` +
        `extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=${san}\n`,
    );
    openssl(dir, [
      'req',
      '-new',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-keyout',
      'leaf.key',
      '-out',
      'leaf.csr',
      '-subj',
      `/CN=${commonName ?? hosts[0]}`,
    ]);
    openssl(dir, [
      'x509',
      '-req',
      '-in',
      'leaf.csr',
      '-CA',
      'ca.crt',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-out',
      'leaf.crt',
      '-days',
      '2',
      '-extfile',
      'ext.cnf',
    ]);
    return {
      certPem: readFileSync(join(dir, 'leaf.crt'), 'utf8'),
      keyPem: readFileSync(join(dir, 'leaf.key'), 'utf8'),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
