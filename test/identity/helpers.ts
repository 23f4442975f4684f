/** Shared by the token verifier tests. */
import { expect } from 'vitest';
import { AuthError } from '../../sidecar/identity/index.js';

/** The AuthError reason a rejected verification gives; fails the test when the token was accepted. */
export async function reason(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(AuthError);
    return (err as AuthError).reason;
  }
  throw new Error('token was accepted');
}
