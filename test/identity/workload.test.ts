/** Workload identity from flags and from the injector's downward-API variables. */
import { describe, expect, it } from 'vitest';
import { IdentityConfigError, workloadIdentity } from '../../sidecar/identity/index.js';

describe('workloadIdentity', () => {
  it('takes the flags', () => {
    expect(workloadIdentity({ serviceAccount: 'shop/checkout', pod: 'checkout-5d9f' }, {})).toEqual({
      serviceAccount: 'shop/checkout',
      pod: 'checkout-5d9f',
    });
  });

  it('takes the injector variables', () => {
    const env = {
      DBGUARD_SERVICE_ACCOUNT: 'checkout',
      DBGUARD_POD_NAMESPACE: 'shop',
      DBGUARD_POD_NAME: 'checkout-abc',
    };
    expect(workloadIdentity({}, env)).toEqual({ serviceAccount: 'shop/checkout', pod: 'checkout-abc' });
    expect(workloadIdentity({}, { DBGUARD_SERVICE_ACCOUNT: 'ns1/sa1' })).toEqual({
      serviceAccount: 'ns1/sa1',
    });
  });

  it('flags win over the environment', () => {
    const env = {
      DBGUARD_SERVICE_ACCOUNT: 'checkout',
      DBGUARD_POD_NAMESPACE: 'shop',
      DBGUARD_POD_NAME: 'env-pod',
    };
    expect(workloadIdentity({ serviceAccount: 'ops/batch', pod: 'flag-pod' }, env)).toEqual({
      serviceAccount: 'ops/batch',
      pod: 'flag-pod',
    });
  });

  it('knows nothing when nothing is given', () => {
    expect(workloadIdentity({}, {})).toEqual({});
  });

  it('refuses malformed names with a clear error', () => {
    expect(() => workloadIdentity({ serviceAccount: 'checkout' }, {})).toThrow(/expected NAMESPACE\/NAME/);
    expect(() => workloadIdentity({ serviceAccount: 'Shop/checkout' }, {})).toThrow(IdentityConfigError);
    expect(() => workloadIdentity({ serviceAccount: 'a/b/c' }, {})).toThrow(/NAMESPACE\/NAME/);
    expect(() => workloadIdentity({ pod: 'bad pod' }, {})).toThrow(/--identity-pod/);
    expect(() => workloadIdentity({}, { DBGUARD_SERVICE_ACCOUNT: 'checkout' })).toThrow(
      /DBGUARD_POD_NAMESPACE/,
    );
  });
});
