/**
 * Static checks of the Helm chart, for machines without helm (`make chart-lint` adds `helm lint` and
 * `helm template` where helm exists): Chart.yaml, values.yaml against values.schema.json, the CRDs equal to
 * what api/ generates and valid CustomResourceDefinitions, the plain files the templates include (RBAC rules,
 * alert rules, dashboard), and the names and flags the templates share with the operator's code.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { Ajv } from 'ajv';
import { beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { APPROVAL_MUTATE_PATH, APPROVAL_VALIDATE_PATH } from '../../operator/approvals/webhook.js';
import {
  APPROVAL_MUTATING_WEBHOOK,
  APPROVAL_VALIDATING_WEBHOOK,
  APPROVAL_WEBHOOK_CONFIG_NAME,
} from '../../operator/approvals/webhook-config.js';
import { DEFAULT_SECRET_NAME } from '../../operator/certs/self-managed.js';
import {
  DEFAULT_SIDECAR_IMAGE,
  INJECT_LABEL,
  METRICS_PORT_NAME,
  OPERATOR_PORT,
  OPERATOR_SERVICE,
  TOKEN_AUDIENCE,
  WEBHOOK_CONFIG_NAME,
  WEBHOOK_NAME,
  WEBHOOK_PATH,
} from '../../operator/inject/constants.js';
import { CA_BUNDLE_LABEL, CA_BUNDLE_LABEL_VALUE } from '../../operator/inject/webhook-config.js';
import { chartCrdDifferences } from '../../scripts/sync-chart-crds.js';
import { type Doc, validateK8s, yamlDocs } from './k8s-schema.js';
import { CHART, CLI, EXAMPLES, ROOT } from './paths.js';

const read = (p: string) => fs.readFileSync(path.join(CHART, p), 'utf8');
const templates = () =>
  fs.readdirSync(path.join(CHART, 'templates')).map((f) => ({ name: f, text: read(`templates/${f}`) }));

function deepMerge(base: unknown, over: unknown): unknown {
  if (over && typeof over === 'object' && !Array.isArray(over) && base && typeof base === 'object') {
    const out: Record<string, unknown> = { ...(base as Record<string, unknown>) };
    for (const [k, v] of Object.entries(over)) out[k] = deepMerge(out[k], v);
    return out;
  }
  return over;
}

describe('Chart.yaml', () => {
  const chart = parse(read('Chart.yaml'));
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));

  it('is a v2 application chart named dbguard with SemVer versions', () => {
    expect(chart.apiVersion).toBe('v2');
    expect(chart.name).toBe('dbguard');
    expect(chart.type).toBe('application');
    expect(chart.version).toMatch(/^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$/);
    expect(chart.kubeVersion).toBeTypeOf('string');
  });

  it("ships the package's version, which is also the injector's default sidecar image tag", () => {
    expect(chart.appVersion).toBe(pkg.version);
    expect(DEFAULT_SIDECAR_IMAGE).toBe(`${parse(read('values.yaml')).image.repository}:v${pkg.version}`);
  });
});

describe('values.yaml and values.schema.json', () => {
  const schema = JSON.parse(read('values.schema.json'));
  const values = parse(read('values.yaml'));
  const ajv = new Ajv({ allErrors: true, strict: false });
  const validate = ajv.compile(schema);
  const errors = (v: unknown) =>
    validate(v) ? [] : (validate.errors ?? []).map((e) => `${e.instancePath} ${e.message}`);

  it('the defaults are valid', () => {
    expect(errors(values)).toEqual([]);
  });

  it('rejects a misspelt key, a bad enum and incomplete modes', () => {
    expect(errors(deepMerge(values, { webhook: { failurePolicy: 'fail' } }))).not.toEqual([]);
    expect(errors(deepMerge(values, { operator: { replica: 3 } }))).not.toEqual([]);
    expect(errors(deepMerge(values, { certificates: { mode: 'provided' } }))).not.toEqual([]);
    expect(errors(deepMerge(values, { gateway: { enabled: true } }))).not.toEqual([]);
    expect(
      errors(deepMerge(values, { gateway: { enabled: true, tokenAuth: { mode: 'jwt' } } })).length,
    ).toBeGreaterThan(0);
    expect(
      errors(deepMerge(values, { certificates: { selfManaged: { certValidity: '1 year' } } })),
    ).not.toEqual([]);
  });

  it("the gateway needs an audience: never empty, never the sidecars' own `dbguard` (issue 17)", () => {
    const gateway = (tokenAuth: Record<string, unknown>) =>
      deepMerge(values, {
        gateway: {
          enabled: true,
          policy: 'people',
          upstream: 'postgres://db:5432/app',
          credentialsSecret: 'db-people',
          tlsSecret: 'gw-tls',
          tokenAuth,
        },
      });
    // the default is not empty: a TokenReview without an audience takes every pod's automounted token
    expect(values.gateway.tokenAuth.audiences).toEqual(['dbguard-gateway']);
    expect(errors(gateway({}))).toEqual([]);
    expect(errors(gateway({ audiences: [] })).join()).toMatch(/audiences/);
    expect(errors(gateway({ audiences: ['dbguard'] })).join()).toMatch(/audiences/);
    expect(errors(gateway({ mode: 'jwt', issuer: 'https://login.example.com', audiences: [] }))).not.toEqual(
      [],
    );
    // the template refuses the same where the schema is not applied (helm template --skip-schema-validation)
    const t = read('templates/gateway.yaml');
    expect(t).toMatch(/if not \$g\.tokenAuth\.audiences \}\}\n\{\{- fail /);
    expect(t).toMatch(/if has "dbguard" \$g\.tokenAuth\.audiences \}\}\n\{\{- fail /);
  });

  it("passes the cluster's OIDC username prefixes to the operator (separation of duties)", () => {
    expect(values.webhook.approvals.oidcUsernamePrefixes).toEqual(['oidc:']);
    // quoted: unquoted, `- --oidc-username-prefix=oidc:` is a YAML mapping and the API server refuses the
    // Deployment (test/kube/helm.test.ts renders it with a real helm and sends it to a real API server)
    expect(read('templates/deployment.yaml')).toContain(
      '- {{ printf "--oidc-username-prefix=%s" (default "-" .) | quote }}',
    );
  });

  it('accepts every values file in examples/helm/ on top of the defaults', () => {
    const dir = path.join(EXAMPLES, 'helm');
    const files = fs.readdirSync(dir).filter((f) => f.endsWith('.yaml'));
    expect(files.length).toBeGreaterThan(0);
    for (const f of files) {
      const merged = deepMerge(values, parse(fs.readFileSync(path.join(dir, f), 'utf8')));
      expect(errors(merged), f).toEqual([]);
    }
  });

  it('has no key the templates never read (every top-level section is used)', () => {
    const all = templates()
      .map((t) => t.text)
      .join('\n');
    for (const section of Object.keys(values)) expect(all, section).toContain(`.Values.${section}`);
  });
});

describe('CRDs', () => {
  it('are exactly what api/ generates (scripts/sync-chart-crds.ts)', () => {
    expect(chartCrdDifferences(path.join(CHART, 'crds'))).toEqual([]);
  });

  it('are valid CustomResourceDefinitions', async () => {
    const dir = path.join(CHART, 'crds');
    const docs = fs
      .readdirSync(dir)
      .flatMap((f) => yamlDocs(`crds/${f}`, fs.readFileSync(path.join(dir, f), 'utf8')));
    expect(docs.map((d) => d.obj.kind)).toEqual(docs.map(() => 'CustomResourceDefinition'));
    for (const d of docs) await validateK8s(d);
  });
});

describe('plain files the templates include', () => {
  it('every .Files.Get names a file that exists', () => {
    const refs = templates().flatMap((t) =>
      [...t.text.matchAll(/\.Files\.Get "([^"]+)"/g)].map((m) => m[1]!),
    );
    expect(refs.length).toBeGreaterThan(0);
    for (const r of refs) expect(fs.existsSync(path.join(CHART, r)), r).toBe(true);
  });

  it('RBAC rule files are valid rules of a ClusterRole', async () => {
    for (const f of fs.readdirSync(path.join(CHART, 'files/rbac'))) {
      const doc: Doc = {
        file: `files/rbac/${f}`,
        index: 0,
        obj: {
          apiVersion: 'rbac.authorization.k8s.io/v1',
          kind: 'ClusterRole',
          metadata: { name: 'x' },
          rules: parse(read(`files/rbac/${f}`)),
        },
      };
      await validateK8s(doc);
    }
  });
});

describe('names shared with the operator', () => {
  it('webhook configurations call the paths the operator serves', () => {
    const w = read('templates/webhooks.yaml');
    for (const s of [
      `name: ${WEBHOOK_CONFIG_NAME}`,
      `name: ${WEBHOOK_NAME}`,
      `path: ${WEBHOOK_PATH}`,
      `name: ${APPROVAL_WEBHOOK_CONFIG_NAME}`,
      `name: ${APPROVAL_MUTATING_WEBHOOK}`,
      `name: ${APPROVAL_VALIDATING_WEBHOOK}`,
      APPROVAL_MUTATE_PATH,
      APPROVAL_VALIDATE_PATH,
      `name: ${OPERATOR_SERVICE}`,
      `port: ${OPERATOR_PORT}`,
      `key: ${INJECT_LABEL}`,
    ])
      expect(w).toContain(s);
    expect(read('templates/_helpers.tpl')).toContain(`${CA_BUNDLE_LABEL}: ${CA_BUNDLE_LABEL_VALUE}`);
  });

  it('the Service, the self-managed Secret, the sidecar port name and token audience match', () => {
    const s = read('templates/service.yaml');
    expect(s).toContain(`name: ${OPERATOR_SERVICE}\n`);
    expect(s).toContain(`port: ${OPERATOR_PORT}`);
    expect(read('templates/_helpers.tpl')).toContain(DEFAULT_SECRET_NAME);
    expect(read('templates/monitoring.yaml')).toContain(`port: ${METRICS_PORT_NAME}`);
    expect(read('templates/gateway.yaml')).toContain(`audience: ${TOKEN_AUDIENCE}`);
  });

  describe('flags in the templates exist', () => {
    const help: Record<string, string> = {};
    beforeAll(async () => {
      if (!fs.existsSync(CLI))
        throw new Error('run `npm run build` first: the test reads the built CLI --help');
      const run = promisify(execFile);
      for (const cmd of ['operator', 'proxy'])
        help[cmd] = (await run(process.execPath, [CLI, cmd, '--help'], { timeout: 20_000 })).stdout;
    });

    /** `--flag` and `--flag=value` items in the args list that follows `- <command>`. */
    function flagsAfter(text: string, command: string): string[] {
      const start = text.indexOf(`- ${command}\n`);
      expect(start, `args of ${command}`).toBeGreaterThanOrEqual(0);
      const block = text.slice(start).split(/\n\s*(?:env|ports):/)[0]!;
      return [...block.matchAll(/^\s*- (--[a-z-]+)/gm)].map((m) => m[1]!);
    }

    it('dbguard operator', () => {
      const flags = flagsAfter(read('templates/deployment.yaml'), 'operator');
      expect(flags.length).toBeGreaterThan(5);
      for (const f of new Set(flags)) expect(help.operator, f).toContain(`${f} `);
    });

    it('dbguard proxy (gateway)', () => {
      const flags = flagsAfter(read('templates/gateway.yaml'), 'proxy');
      expect(flags.length).toBeGreaterThan(8);
      for (const f of new Set(flags)) expect(help.proxy, f).toMatch(new RegExp(`${f}[ \\n]`));
    });
  });
});
