/**
 * docs/reference.md, written from the schemas (as lists, which Biome's Markdown formatter leaves as they are): every field with its type, default, constraints
 * and description, and the cross-field rules. A test keeps the committed file fresh.
 */

import { describePattern } from './patterns.js';
import { type JSONSchemaProps, KINDS, SCHEMAS } from './schemas.js';
import { API_VERSION } from './types.js';

function typeOf(s: JSONSchemaProps): string {
  if (s.type === 'array') return `[]${s.items ? typeOf(s.items) : 'any'}`;
  return s.type ?? 'any';
}

function constraints(s: JSONSchemaProps, required: boolean): string {
  const out: string[] = [];
  if (required) out.push('**required**');
  if (s.default !== undefined) out.push(`default \`${JSON.stringify(s.default)}\``);
  if (s.enum) out.push(`one of ${s.enum.map((v) => `\`${v}\``).join(', ')}`);
  if (s.pattern) out.push(describePattern(s.pattern) ?? `pattern \`${s.pattern}\``);
  if (s.format) out.push(s.format);
  if (s.minimum !== undefined) out.push(`≥ ${s.minimum}`);
  if (s.maximum !== undefined) out.push(`≤ ${s.maximum}`);
  if (s.maxItems !== undefined) out.push(`at most ${s.maxItems} items`);
  return out.join('; ');
}

function rows(s: JSONSchemaProps, path: string, required: boolean, out: string[], rules: string[]) {
  if (path) {
    const facts = [typeOf(s), constraints(s, required)].filter(Boolean).join('; ');
    out.push(`- \`${path}\` (${facts}): ${(s.description ?? '').replace(/\n/g, ' ')}`);
  }
  for (const v of s['x-kubernetes-validations'] ?? []) {
    const at = path || '(object)';
    rules.push(`- \`${at}\`: ${v.message} (CEL: \`${v.rule}\`)`);
  }
  const item = s.type === 'array' ? s.items : undefined;
  const obj = item ?? s;
  if (item)
    for (const v of item['x-kubernetes-validations'] ?? [])
      rules.push(`- \`${path}[]\`: ${v.message} (CEL: \`${v.rule}\`)`);
  for (const [k, ps] of Object.entries(obj.properties ?? {})) {
    rows(
      ps,
      `${path}${item ? '[]' : ''}${path ? '.' : ''}${k}`,
      obj.required?.includes(k) ?? false,
      out,
      rules,
    );
  }
}

export function referenceMarkdown(): string {
  const out: string[] = [
    '# dbguard resource reference',
    '',
    '<!-- Generated from api/schemas.ts by scripts/generate-crds.ts (npm run generate). Do not edit. -->',
    '',
    `All resources are namespaced, in API version \`${API_VERSION}\`. \`kubectl explain <kind>.spec\` shows the`,
    'same descriptions. Durations are Go-style (`30s`, `5m`, `1h30m`).',
    '',
  ];
  for (const kind of KINDS) {
    const schema = SCHEMAS[kind];
    out.push(`## ${kind}`, '', schema.description ?? '', '');
    const rules: string[] = [];
    for (const part of ['spec', 'status'] as const) {
      const ps = schema.properties?.[part];
      if (ps) rows(ps, part, schema.required?.includes(part) ?? false, out, rules);
    }
    out.push('');
    if (rules.length)
      out.push('Rules checked by the API server (and by policy-file loading):', '', ...rules, '');
  }
  return `${out.join('\n').trimEnd()}\n`;
}
