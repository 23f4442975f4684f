/**
 * The JSON text of an audit event, without its closing brace (the writer appends `seq` and `prev`).
 * Always the same text as `JSON.stringify(event)`. Query events built by `queryEvent()` take a
 * faster path: their shape is fixed, and their shared, frozen sub-objects (identity, statement,
 * masked columns; see events.ts) are stringified once per object instead of once per event. At one
 * client the audit trail was a quarter of the proxy's CPU per statement, most of it this work.
 */
import { type AuditEvent, BuiltQueryEvent } from './events.js';

const texts = new WeakMap<object, string>();

/** JSON of a frozen object, cached by identity. A frozen object cannot change, so neither can its text. */
function frozenJson(v: object): string {
  let text = texts.get(v);
  if (text === undefined) {
    text = JSON.stringify(v);
    // Frozen all the way down is what events.ts builds; anything else is never cached.
    if (
      Object.isFrozen(v) &&
      Object.values(v).every((x) => typeof x !== 'object' || x === null || Object.isFrozen(x))
    )
      texts.set(v, text);
  }
  return text;
}

function json(v: string | number | null): string {
  return v === null ? 'null' : JSON.stringify(v);
}

function queryBody(e: BuiltQueryEvent): string {
  // The keys in the order queryEvent() creates them, which is the order JSON.stringify would use.
  return (
    `{"time":${json(e.time)},"event":"query","sessionId":${json(e.sessionId)}` +
    `,"policy":${json(e.policy)},"policyVersion":${json(e.policyVersion)}` +
    `,"identity":${frozenJson(e.identity)},"decision":${json(e.decision)},"rule":${json(e.rule)}` +
    `,"statement":${frozenJson(e.statement)},"batch":${e.batch === null ? 'null' : JSON.stringify(e.batch)}` +
    `,"maskedColumns":${frozenJson(e.maskedColumns)},"rowCount":${json(e.rowCount)}` +
    `,"durationMs":${json(e.durationMs)},"sqlstate":${json(e.sqlstate)},"enforced":${e.enforced}` +
    `,"tags":${e.tags === null ? 'null' : JSON.stringify(e.tags)}` +
    `,"reason":${json(e.reason)},"message":${json(e.message)}`
  );
}

/** `JSON.stringify(event)` less its final `}`. Events never carry `seq` or `prev`. */
export function eventBody(e: AuditEvent): string {
  // A subclass could add fields the fast path would not write: only the class itself qualifies.
  if (Object.getPrototypeOf(e) === BuiltQueryEvent.prototype) return queryBody(e as BuiltQueryEvent);
  return JSON.stringify(e).slice(0, -1);
}
