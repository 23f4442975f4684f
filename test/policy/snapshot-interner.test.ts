/** Sessions that read the same catalog share one snapshot object; anything that differs does not. */
import { describe, expect, test } from 'vitest';
import { parseCatalog, SnapshotInterner } from '../../policy/catalog.js';

const rows = (
  opts: {
    path?: string[];
    user?: string;
    temp?: string;
    version?: string;
    server?: string;
    hashfn?: string;
  } = {},
) => [
  ...(opts.path ?? ['pg_catalog', 'public']).map((s, i) => [
    'path',
    s,
    String(i + 1),
    null,
    null,
    null,
    null,
    null,
  ]),
  ['user', opts.user ?? 'app', null, null, null, null, null, null],
  ...(opts.temp ? [['temp', opts.temp, null, null, null, null, null, null]] : []),
  ['schema', 'public', null, null, null, null, null, null],
  ['rel', 'public', 'orders', 'r', null, null, null, null],
  ['server', opts.server ?? '150004', null, null, null, null, null, null],
  ['version', opts.version ?? '10.1:2.3:0', null, null, null, null, null, null],
  ...(opts.hashfn ? [['hashfn', opts.hashfn, null, null, null, null, null, null]] : []),
];

describe('SnapshotInterner', () => {
  test('the same catalog read by two sessions is one object', () => {
    const interner = new SnapshotInterner();
    const a = interner.intern('sha256:p1', parseCatalog(rows()));
    const b = interner.intern('sha256:p1', parseCatalog(rows()));
    expect(b).toBe(a);
    expect(interner.size).toBe(1);
  });

  test('another policy, catalog version, server version, search path, user or temp schema keeps its own snapshot', () => {
    const interner = new SnapshotInterner();
    const base = interner.intern('sha256:p1', parseCatalog(rows()));
    const others = [
      interner.intern('sha256:p2', parseCatalog(rows())),
      interner.intern('sha256:p1', parseCatalog(rows({ version: '11.1:2.3:0' }))),
      interner.intern('sha256:p1', parseCatalog(rows({ path: ['pg_catalog', 'shop', 'public'] }))),
      interner.intern('sha256:p1', parseCatalog(rows({ user: 'reporting' }))),
      interner.intern('sha256:p1', parseCatalog(rows({ temp: 'pg_temp_3' }))),
      interner.intern('sha256:p1', parseCatalog(rows({ server: '130012' }))),
    ];
    for (const o of others) expect(o).not.toBe(base);
    expect(new Set(others).size).toBe(others.length);
    expect(others[2]!.searchPath).toEqual(['pg_catalog', 'shop', 'public']);
    expect(base.serverVersionNum).toBe(150004);
    expect(others[5]!.serverVersionNum).toBe(130012);
    expect(parseCatalog(rows({ server: 'garbage' })).serverVersionNum).toBe(0);
  });

  test('the Hash function verdict (judged for the login role, not current_user) keeps its own snapshot', () => {
    const interner = new SnapshotInterner();
    const none = interner.intern('sha256:p1', parseCatalog(rows()));
    const ok = interner.intern('sha256:p1', parseCatalog(rows({ hashfn: 'ok' })));
    const owner = interner.intern(
      'sha256:p1',
      parseCatalog(rows({ hashfn: 'the login role owns dbguard.hash' })),
    );
    expect(new Set([none, ok, owner]).size).toBe(3);
    expect(none.hashFunction).toEqual({ usable: false, why: 'dbguard.hash is not installed' });
    expect(ok.hashFunction).toEqual({ usable: true });
    expect(owner.hashFunction).toEqual({ usable: false, why: 'the login role owns dbguard.hash' });
    expect(interner.intern('sha256:p1', parseCatalog(rows({ hashfn: 'ok' })))).toBe(ok);
  });

  test('holds a bounded number of snapshots', () => {
    const interner = new SnapshotInterner(3);
    for (let i = 0; i < 10; i++) interner.intern('p', parseCatalog(rows({ version: `v${i}` })));
    expect(interner.size).toBe(3);
  });
});
