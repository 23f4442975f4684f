/**
 * @peculiar/x509 registers its algorithms through tsyringe, which insists on the Reflect metadata API
 * (normally from the `reflect-metadata` package, not a dependency here). This is the small part of that
 * API tsyringe and tslib's `__metadata` use: per-target maps, looked up along the prototype chain.
 * Installed only when nothing else provides it.
 */
type Target = object;
const store = new WeakMap<Target, Map<unknown, unknown>>();

function own(target: Target, create: boolean): Map<unknown, unknown> | undefined {
  let m = store.get(target);
  if (!m && create) {
    m = new Map();
    store.set(target, m);
  }
  return m;
}

const R = Reflect as unknown as Record<string, unknown>;
if (typeof R.getMetadata !== 'function') {
  const getOwnMetadata = (key: unknown, target: Target) => own(target, false)?.get(key);
  const getMetadata = (key: unknown, target: Target): unknown => {
    for (let t: Target | null = target; t; t = Object.getPrototypeOf(t)) {
      const m = own(t, false);
      if (m?.has(key)) return m.get(key);
    }
    return undefined;
  };
  const defineMetadata = (key: unknown, value: unknown, target: Target) => void own(target, true)!.set(key, value);
  Object.assign(R, {
    getOwnMetadata,
    getMetadata,
    defineMetadata,
    hasMetadata: (key: unknown, target: Target) => getMetadata(key, target) !== undefined,
    hasOwnMetadata: (key: unknown, target: Target) => own(target, false)?.has(key) ?? false,
    metadata: (key: unknown, value: unknown) => (target: Target) => defineMetadata(key, value, target),
  });
}

export {};
