import { describe, expect, it } from 'vitest';
import { isLoopback } from '../../sidecar/connection.js';

// Credentials mode trusts loopback clients only (or verifies a token): the address check decides it.
describe('isLoopback', () => {
  it.each([
    ['127.0.0.1', true],
    ['127.1.2.3', true],
    ['::1', true],
    ['::ffff:127.0.0.1', true],
    ['10.0.0.5', false],
    ['::ffff:10.0.0.5', false],
    ['fd00::2', false],
    ['1270.0.0.1', false],
    [undefined, false],
  ])('%s → %s', (addr, want) => {
    expect(isLoopback(addr)).toBe(want);
  });
});
