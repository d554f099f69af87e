// The condition language of `visible_when` / `required_when`, evaluated in the
// browser from the JSON tree the server emits. Mirrors `Condition::eval` in
// engine/model/src/condition.rs; the browser tests run both on the same cases.

function truthy(v) {
  if (v === null || v === undefined) return false;
  if (typeof v === "boolean") return v;
  if (typeof v === "number") return v !== 0;
  if (typeof v === "string") return v !== "";
  if (Array.isArray(v)) return v.length > 0;
  if (typeof v === "object") return Object.keys(v).length > 0;
  return true;
}

function jsonEq(a, b) {
  if (typeof a === "number" && typeof b === "number") return a === b;
  if (a === null || b === null || typeof a !== "object" || typeof b !== "object") return a === b;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a)) return a.length === b.length && a.every((x, i) => jsonEq(x, b[i]));
  const ka = Object.keys(a), kb = Object.keys(b);
  return ka.length === kb.length && ka.every((k) => Object.prototype.hasOwnProperty.call(b, k) && jsonEq(a[k], b[k]));
}

export function evaluate(c, data) {
  const get = (f) => (Object.prototype.hasOwnProperty.call(data, f) ? data[f] : null);
  switch (c.op) {
    case "truthy": return truthy(get(c.field));
    case "not": return !evaluate(c.arg, data);
    case "and": return c.args.every((a) => evaluate(a, data));
    case "or": return c.args.some((a) => evaluate(a, data));
    case "in": {
      const v = get(c.field);
      if (Array.isArray(v)) return v.some((i) => c.values.some((x) => jsonEq(i, x)));
      return c.values.some((x) => jsonEq(v, x));
    }
    case "compare": {
      const v = get(c.field);
      const value = c.value;
      switch (c.cmp) {
        case "==": return Array.isArray(v) && !Array.isArray(value) ? v.some((i) => jsonEq(i, value)) : jsonEq(v, value);
        case "!=": return Array.isArray(v) && !Array.isArray(value) ? !v.some((i) => jsonEq(i, value)) : !jsonEq(v, value);
        default: {
          let ord = null;
          if (typeof v === "number" && typeof value === "number") ord = v < value ? -1 : v > value ? 1 : 0;
          else if (typeof v === "string" && typeof value === "string") ord = v < value ? -1 : v > value ? 1 : 0;
          if (ord === null || Number.isNaN(ord)) return false;
          if (c.cmp === "<") return ord < 0;
          if (c.cmp === "<=") return ord <= 0;
          if (c.cmp === ">") return ord > 0;
          return ord >= 0;
        }
      }
    }
    default: return false;
  }
}
