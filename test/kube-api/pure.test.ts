/** The pure parts of the test API server: patches, selectors, CRD schemas. */
import { describe, expect, it } from 'vitest';
import { ApiError } from '../support/kube-api/errors.js';
import { applyJsonPatch, applyMergePatch, applyStrategicMergePatch } from '../support/kube-api/patch.js';
import { SchemaValidator } from '../support/kube-api/schema.js';
import { matchesLabels, parseLabelSelector, selectorFromObject } from '../support/kube-api/selectors.js';

describe('JSON patch (RFC 6902)', () => {
  const doc = { a: { b: [1, 2, 3], 'c/d': 'x', 'e~f': 'y' } };

  it('applies add, remove, replace, move, copy and test, with ~0/~1 escapes and "-"', () => {
    const out = applyJsonPatch(doc, [
      { op: 'add', path: '/a/b/1', value: 9 },
      { op: 'add', path: '/a/b/-', value: 4 },
      { op: 'remove', path: '/a/b/0' },
      { op: 'replace', path: '/a/c~1d', value: 'z' },
      { op: 'test', path: '/a/e~0f', value: 'y' },
      { op: 'copy', from: '/a/b', path: '/copied' },
      { op: 'move', from: '/a/e~0f', path: '/moved' },
    ]);
    expect(out).toEqual({ a: { b: [9, 2, 3, 4], 'c/d': 'z' }, copied: [9, 2, 3, 4], moved: 'y' });
    expect(doc.a.b).toEqual([1, 2, 3]); // the input is not changed
  });

  it('fails the whole patch on a failed test, a missing path or a bad index', () => {
    for (const ops of [
      [{ op: 'test', path: '/a/c~1d', value: 'nope' }],
      [{ op: 'remove', path: '/a/missing' }],
      [{ op: 'replace', path: '/a/b/7', value: 1 }],
      [{ op: 'add', path: '/x/y', value: 1 }],
      [{ op: 'move', from: '/a', path: '/a/inner' }],
      [{ op: 'frobnicate', path: '/a' }],
    ])
      expect(() => applyJsonPatch(doc, ops), JSON.stringify(ops)).toThrow(ApiError);
    expect(() => applyJsonPatch(doc, { op: 'add' })).toThrow(/array/);
  });
});

describe('merge patches', () => {
  it('RFC 7386: null deletes, objects merge, arrays replace', () => {
    expect(applyMergePatch({ a: 1, b: { c: 2, d: 3 }, l: [1, 2] }, { a: null, b: { c: 5 }, l: [3] })).toEqual(
      { b: { c: 5, d: 3 }, l: [3] },
    );
  });

  it('strategic merge: containers merge by name, $patch: delete removes, finalizers merge as a set', () => {
    const pod = {
      metadata: { finalizers: ['a'] },
      spec: {
        containers: [
          { name: 'app', image: 'v1' },
          { name: 'old', image: 'x' },
        ],
      },
    };
    const out = applyStrategicMergePatch(pod, {
      metadata: { finalizers: ['a', 'b'] },
      spec: {
        $setElementOrder$containers: [],
        containers: [
          { name: 'app', image: 'v2' },
          { name: 'old', $patch: 'delete' },
          { name: 'proxy', image: 'p' },
        ],
      },
    });
    expect(out).toEqual({
      metadata: { finalizers: ['a', 'b'] },
      spec: {
        containers: [
          { name: 'app', image: 'v2' },
          { name: 'proxy', image: 'p' },
        ],
      },
    });
  });
});

describe('label selectors', () => {
  it('parses the string syntax and LabelSelector objects', () => {
    const reqs = parseLabelSelector('app=web, tier in (a,b),!legacy,env!=prod,owner');
    expect(matchesLabels(reqs, { app: 'web', tier: 'b', env: 'dev', owner: 'x' })).toBe(true);
    expect(matchesLabels(reqs, { app: 'web', tier: 'c', owner: 'x' })).toBe(false);
    expect(matchesLabels(reqs, { app: 'web', tier: 'a', owner: 'x', legacy: '' })).toBe(false);
    expect(() => parseLabelSelector('a=(b')).toThrow(ApiError);
    const sel = selectorFromObject({
      matchLabels: { a: '1' },
      matchExpressions: [{ key: 'b', operator: 'NotIn', values: ['x'] }],
    });
    expect(matchesLabels(sel, { a: '1', b: 'y' })).toBe(true);
    expect(matchesLabels(sel, { a: '1', b: 'x' })).toBe(false);
    expect(matchesLabels(selectorFromObject({}), {})).toBe(true);
  });
});

describe('CRD schemas', () => {
  const schema = {
    type: 'object',
    properties: {
      spec: {
        type: 'object',
        required: ['port'],
        properties: {
          port: { type: 'integer', default: 5432, minimum: 1 },
          size: { 'x-kubernetes-int-or-string': true },
          note: { type: 'string', nullable: true },
          when: { type: 'string', format: 'date-time' },
          tags: { type: 'array', items: { type: 'string' }, 'x-kubernetes-list-type': 'set', maxItems: 2 },
          free: { type: 'object', 'x-kubernetes-preserve-unknown-fields': true },
          labels: { type: 'object', additionalProperties: { type: 'string' } },
        },
      },
    },
  };

  it('defaults even required fields, prunes unknown ones, keeps preserved and map fields', () => {
    const v = new SchemaValidator();
    const obj: any = {
      apiVersion: 'x/v1',
      kind: 'X',
      metadata: { name: 'n' },
      spec: { extra: 1, size: '50%', note: null, free: { any: { thing: 1 } }, labels: { a: 'b' } },
    };
    const { pruned, causes } = v.check('t', schema, obj);
    expect(causes).toEqual([]);
    expect(pruned).toEqual(['spec.extra']);
    expect(obj.spec).toEqual({
      port: 5432,
      size: '50%',
      note: null,
      free: { any: { thing: 1 } },
      labels: { a: 'b' },
    });
    expect(Object.keys(obj)).toEqual(['apiVersion', 'kind', 'metadata', 'spec']);
  });

  it('reports causes with Kubernetes field paths and reasons', () => {
    const v = new SchemaValidator();
    const { causes } = v.check('t', schema, {
      spec: { port: 0, size: true, when: 'yesterday', tags: ['a', 'a', 'b'], labels: { a: 1 } },
    });
    const byField = Object.fromEntries(causes.map((c) => [c.field, c.reason]));
    expect(byField['spec.port']).toBe('FieldValueInvalid');
    expect(byField['spec.when']).toBe('FieldValueInvalid');
    expect(byField['spec.tags']).toBe('FieldValueTooMany');
    expect(byField['spec.tags[1]']).toBe('FieldValueDuplicate');
    expect(byField['spec.labels.a']).toBe('FieldValueTypeInvalid');
    expect(causes.some((c) => c.field === 'spec.size')).toBe(true);
  });
});
