/** The audit trail: event builders, the statement scrubber, the chained JSON-lines writer, verify. */
export * from './chain.js';
export * from './events.js';
export * from './filter.js';
export * from './statement.js';
export * from './verify.js';
export * from './writer.js';
