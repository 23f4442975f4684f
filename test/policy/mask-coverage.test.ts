/** The nearest-name suggestion of MaskingRule checks (policy/mask-coverage.ts): close typos only. */
import { describe, expect, it } from 'vitest';
import { nearestName } from '../../policy/mask-coverage.js';

describe('nearestName', () => {
  const columns = ['id', 'name', 'email', 'ssn', 'card_number', 'birth_date'];
  it.each([
    ['ssnn', 'ssn'],
    ['SSN', 'ssn'],
    ['emial', 'email'],
    ['card_nubmer', 'card_number'],
    ['birthdate', 'birth_date'],
    ['nmae', 'name'],
  ])('%s → %s', (typo, want) => {
    expect(nearestName(typo, columns)).toBe(want);
  });

  it.each(['salary', 'phone', 'xyz', 'ss_number_x'])('%s → nothing close', (name) => {
    expect(nearestName(name, columns)).toBeUndefined();
  });

  it('tables: customerz → customers, not orders', () => {
    expect(nearestName('customerz', ['orders', 'customers', 'customer_notes'])).toBe('customers');
  });
});
