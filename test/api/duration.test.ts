import { describe, expect, it } from 'vitest';
import { DurationError, parseDuration, parsePositiveDuration } from '../../policy/duration.js';

describe('parseDuration', () => {
  it.each([
    ['30s', 30],
    ['5m', 300],
    ['1h', 3600],
    ['1h30m', 5400],
    ['1h30m15s', 5415],
    ['1.5h', 5400],
    ['500ms', 0.5],
    ['2m500ms', 120.5],
    ['0s', 0],
  ])('%s is %d seconds', (text, seconds) => {
    expect(parseDuration(text)).toBe(seconds);
  });

  it.each(['', '5', 'm', '5 m', '5min', '-5s', '1d', '1h 30m', '.5h', 'abc'])('refuses %j', (text) => {
    expect(() => parseDuration(text)).toThrow(DurationError);
    expect(() => parseDuration(text)).toThrow(
      /is not a duration: use a number and unit such as 30s, 5m or 1h30m/,
    );
  });

  it('refuses non-strings without crashing', () => {
    expect(() => parseDuration(300 as unknown as string)).toThrow(/300 is not a duration/);
  });

  it('parsePositiveDuration refuses zero', () => {
    expect(() => parsePositiveDuration('0m')).toThrow('"0m" must be longer than zero');
    expect(parsePositiveDuration('1s')).toBe(1);
  });
});
