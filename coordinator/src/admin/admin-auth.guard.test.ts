import { describe, it, expect } from 'vitest';
import { roleAllows } from './admin-auth.guard';

describe('roleAllows', () => {
  it('orders roles admin > operator > viewer', () => {
    expect(roleAllows('admin', ['admin'])).toBe(true);
    expect(roleAllows('operator', ['admin'])).toBe(false);
    expect(roleAllows('viewer', ['operator'])).toBe(false);
    expect(roleAllows('operator', ['operator'])).toBe(true);
    expect(roleAllows('admin', ['viewer'])).toBe(true);
    expect(roleAllows('viewer', ['viewer'])).toBe(true);
  });

  it('uses the weakest listed role as the bar', () => {
    expect(roleAllows('operator', ['admin', 'operator'])).toBe(true);
    expect(roleAllows('viewer', ['admin', 'operator'])).toBe(false);
  });

  it('denies when no role is required (handlers must opt in with @Roles or @Public)', () => {
    expect(roleAllows('admin', [])).toBe(false);
  });
});
