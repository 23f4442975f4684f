/**
 * The webhook's own PKI, made with @peculiar/x509 on Node's WebCrypto: an EC P-256 CA and a serving
 * certificate it signs for the operator's Service names. PEM in, PEM out, so the result can be kept in a
 * Secret and handed to node:https as is.
 */
// must run before @peculiar/x509 loads tsyringe
// @peculiar/x509 registers its algorithms through tsyringe, which needs the Reflect metadata API.
import 'reflect-metadata';
import { createPrivateKey, X509Certificate as NodeX509, webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';

const crypto = webcrypto;
// @peculiar/x509 is typed against the DOM's Crypto; Node's webcrypto is the same API
x509.cryptoProvider.set(crypto as any);
type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
/** backdated so a node whose clock is slightly behind still accepts a certificate issued just now */
const CLOCK_SKEW_MS = 5 * 60_000;
/** the backdating never takes more than a tenth of the lifetime (renewal is computed from the lifetime) */
const backdate = (now: Date, validityMs: number) =>
  new Date(now.getTime() - Math.min(CLOCK_SKEW_MS, validityMs / 10));

export interface KeyPairPem {
  certPem: string;
  keyPem: string;
}

function pem(label: string, der: ArrayBuffer): string {
  const b64 = Buffer.from(der)
    .toString('base64')
    .replace(/(.{64})/g, '$1\n')
    .replace(/\n$/, '');
  return `-----BEGIN ${label}-----\n${b64}\n-----END ${label}-----\n`;
}

async function importKey(keyPem: string): Promise<CryptoKey> {
  const b64 = keyPem.replace(/-----(BEGIN|END) PRIVATE KEY-----/g, '').replace(/\s+/g, '');
  return crypto.subtle.importKey('pkcs8', Buffer.from(b64, 'base64'), ALG, false, ['sign']);
}

const withNewline = (s: string) => (s.endsWith('\n') ? s : `${s}\n`);

function serial(): string {
  // positive, 16 random bytes
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  b[0] = (b[0]! & 0x7f) | 0x01;
  return Buffer.from(b).toString('hex');
}

export async function createCa(
  commonName: string,
  validityMs: number,
  now = new Date(),
): Promise<KeyPairPem> {
  const keys = (await crypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as CryptoKeyPair;
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `CN=${commonName}`,
    notBefore: backdate(now, validityMs),
    notAfter: new Date(now.getTime() + validityMs),
    keys,
    signingAlgorithm: ALG,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return {
    certPem: withNewline(cert.toString('pem')),
    keyPem: pem('PRIVATE KEY', await crypto.subtle.exportKey('pkcs8', keys.privateKey)),
  };
}

/** A serverAuth certificate for `dnsNames`, signed by `ca`; never valid beyond the CA's own notAfter. */
export async function issueServing(
  ca: KeyPairPem,
  dnsNames: string[],
  validityMs: number,
  now = new Date(),
): Promise<KeyPairPem> {
  if (dnsNames.length === 0) throw new Error('issueServing: at least one DNS name is needed');
  const caCert = new x509.X509Certificate(ca.certPem);
  const keys = (await crypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as CryptoKeyPair;
  const notAfter = new Date(Math.min(now.getTime() + validityMs, caCert.notAfter.getTime()));
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: `CN=${dnsNames[0]}`,
    issuer: caCert.subject,
    notBefore: backdate(now, validityMs),
    notAfter,
    publicKey: keys.publicKey,
    signingKey: await importKey(ca.keyPem),
    signingAlgorithm: ALG,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension(dnsNames.map((value) => ({ type: 'dns' as const, value }))),
      await x509.AuthorityKeyIdentifierExtension.create(caCert, false),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return {
    certPem: withNewline(cert.toString('pem')),
    keyPem: pem('PRIVATE KEY', await crypto.subtle.exportKey('pkcs8', keys.privateKey)),
  };
}

export interface CertFacts {
  notBefore: Date;
  notAfter: Date;
  dnsNames: string[];
}

/** Validity and names of a PEM certificate (the first in the text); throws on text that is not one. */
export function certFacts(certPem: string): CertFacts {
  const c = new NodeX509(certPem);
  const dnsNames = (c.subjectAltName ?? '')
    .split(', ')
    .filter((s) => s.startsWith('DNS:'))
    .map((s) => s.slice(4));
  return { notBefore: new Date(c.validFrom), notAfter: new Date(c.validTo), dnsNames };
}

/** true when `leafPem` was signed by `caPem` and its key is the one in `keyPem` */
export function leafMatches(leafPem: string, keyPem: string, caPem: string): boolean {
  try {
    const leaf = new NodeX509(leafPem);
    const ca = new NodeX509(caPem);
    return (
      leaf.checkIssued(ca) && leaf.verify(ca.publicKey) && leaf.checkPrivateKey(createPrivateKey(keyPem))
    );
  } catch {
    return false;
  }
}

/** splits a PEM bundle into its certificates */
export function splitPemBundle(bundle: string): string[] {
  return (
    bundle
      .match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n?/g)
      ?.map((s) => (s.endsWith('\n') ? s : `${s}\n`)) ?? []
  );
}
