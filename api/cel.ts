/**
 * The schemas' cross-field rules, each once: the CEL expression the API server evaluates
 * (`x-kubernetes-validations`) next to its TypeScript equivalent, which `api/validate.ts` runs
 * because ajv cannot evaluate CEL. The schemas reference these entries; the validator finds the
 * predicate by the rule's text, so a rule cannot be in the CRD without its check or vice versa.
 *
 * CEL cost: every list and string a rule iterates or compares has maxItems/maxLength in the
 * schema, so the API server's static cost estimate stays far below its budget.
 */

/** One problem a predicate found, at a path relative to the node the rule sits on (`[2].name`). */
export interface Violation {
  path: string;
  message: string;
}

export interface CelRule {
  /** CEL expression, exactly as written into the CRD */
  rule: string;
  /** what the API server reports when the rule fails */
  message: string;
  /** the field the error is about, relative to the node (Kubernetes `fieldPath`) */
  fieldPath?: string;
  reason?: 'FieldValueInvalid' | 'FieldValueForbidden' | 'FieldValueRequired' | 'FieldValueDuplicate';
  /**
   * The same rule in TypeScript. `false` reports `message` at `fieldPath`; a list reports each
   * violation (for a more precise path than CEL can give). Rules that read `oldSelf` (transition
   * rules) run only when an old object is given, as on an update.
   */
  check(self: any, oldSelf?: any): boolean | Violation[];
}

const has = (o: unknown, key: string): boolean =>
  typeof o === 'object' && o !== null && (o as Record<string, unknown>)[key] !== undefined;

function onlyWithStrategy(field: string, strategy: string): CelRule {
  return {
    rule: `self.strategy == '${strategy}' || !has(self.${field})`,
    message: `${field} is only allowed with strategy ${strategy}`,
    fieldPath: `.${field}`,
    reason: 'FieldValueForbidden',
    check: (self) => self.strategy === strategy || !has(self, field),
  };
}

function requiredForStrategy(field: string, strategy: string, what: string): CelRule {
  return {
    rule: `self.strategy != '${strategy}' || has(self.${field})`,
    message: `${what} is required for strategy ${strategy}`,
    fieldPath: `.${field}`,
    reason: 'FieldValueRequired',
    check: (self) => self.strategy !== strategy || has(self, field),
  };
}

export const CEL = {
  uniqueRuleNames: {
    rule: 'self.all(r, self.exists_one(s, s.name == r.name))',
    message: 'rule names must be unique within a policy',
    // no reason FieldValueDuplicate: with it kube-apiserver drops the message and says only
    // "spec.rules: Duplicate value" (test/kube/crd-cel.test.ts)
    check(self) {
      if (!Array.isArray(self)) return true;
      const first = new Map<string, number>();
      const out: Violation[] = [];
      self.forEach((r: any, i: number) => {
        const name = r?.name;
        if (typeof name !== 'string') return;
        const j = first.get(name);
        if (j === undefined) first.set(name, i);
        else out.push({ path: `[${i}].name`, message: `duplicate rule name "${name}" (also rules[${j}])` });
      });
      return out;
    },
  },
  approvalOnlyWithRequireApproval: {
    rule: "self.action == 'RequireApproval' || !has(self.approval)",
    message: 'approval is only allowed with action RequireApproval',
    fieldPath: '.approval',
    reason: 'FieldValueForbidden',
    check: (self) => self.action === 'RequireApproval' || !has(self, 'approval'),
  },
  namespaceOnlyForServiceAccount: {
    rule: "self.kind == 'ServiceAccount' || !has(self.namespace)",
    message: 'namespace is only allowed for kind ServiceAccount',
    fieldPath: '.namespace',
    reason: 'FieldValueForbidden',
    check: (self) => self.kind === 'ServiceAccount' || !has(self, 'namespace'),
  },
  partialOnlyWithPartial: onlyWithStrategy('partial', 'Partial'),
  hashOnlyWithHash: onlyWithStrategy('hash', 'Hash'),
  constantOnlyWithConstant: onlyWithStrategy('constant', 'Constant'),
  generalizeOnlyWithGeneralize: onlyWithStrategy('generalize', 'Generalize'),
  constantRequired: requiredForStrategy('constant', 'Constant', 'constant.value'),
  // Salt required: an unsalted hash of a small domain (SSNs, phone numbers) is reversed by enumeration.
  hashRequired: requiredForStrategy('hash', 'Hash', 'hash.saltSecretRef'),
  generalizeRequired: requiredForStrategy('generalize', 'Generalize', 'generalize.unit or generalize.step'),
  generalizeUnitXorStep: {
    rule: 'has(self.unit) != has(self.step)',
    message: 'give exactly one of unit (for dates and timestamps) or step (for numbers)',
    check: (self) => has(self, 'unit') !== has(self, 'step'),
  },
  decisionIsFinal: {
    rule: '!has(oldSelf.decision) || (has(self.decision) && self.decision == oldSelf.decision)',
    message: 'decision can be set once and then neither changed nor removed',
    fieldPath: '.decision',
    reason: 'FieldValueForbidden',
    check: (self, oldSelf) =>
      !has(oldSelf, 'decision') || (has(self, 'decision') && self.decision === oldSelf.decision),
  },
  immutable: {
    rule: 'self == oldSelf',
    message: 'is immutable: an approval is for exactly the request that was made',
    check: (self, oldSelf) => deepEqual(self, oldSelf),
  },
} satisfies Record<string, CelRule>;

function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a).filter((k) => (a as any)[k] !== undefined);
  const kb = Object.keys(b).filter((k) => (b as any)[k] !== undefined);
  if (ka.length !== kb.length) return false;
  return ka.every((k) => deepEqual((a as any)[k], (b as any)[k]));
}

/** The `x-kubernetes-validations` entry of a rule, as the CRD carries it. */
export function xValidation(r: CelRule): Record<string, string> {
  const out: Record<string, string> = { rule: r.rule, message: r.message };
  if (r.fieldPath) out.fieldPath = r.fieldPath;
  if (r.reason) out.reason = r.reason;
  return out;
}

const byRuleText = new Map<string, CelRule>(Object.values(CEL).map((r) => [r.rule, r]));

/** The rule whose CEL text is `text`, so the validator can run its TypeScript twin. */
export function celRuleByText(text: string): CelRule | undefined {
  return byRuleText.get(text);
}

/** Whether a rule reads `oldSelf` (a transition rule: evaluated on update only). */
export function isTransitionRule(r: CelRule): boolean {
  return /\boldSelf\b/.test(r.rule);
}
