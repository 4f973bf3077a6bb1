/**
 * A tiny evaluator of the Workflow Definition Language expressions the playbook uses (function
 * calls, numbers, 'strings', `?['key']` access), so tests can run the playbook's expressions on
 * real trigger bodies instead of comparing strings. Functions behave as the Logic Apps docs say.
 */
type Value = unknown;

export function evaluateWdl(expression: string, context: { triggerBody: Value }): Value {
  if (!expression.startsWith("@")) throw new Error("not an expression");
  const source = expression.slice(1);
  let pos = 0;
  const skip = () => {
    while (source[pos] === " ") pos++;
  };
  const expect = (char: string) => {
    skip();
    if (source[pos] !== char) throw new Error(`expected ${char} at ${pos} in ${source}`);
    pos++;
  };
  const functions: Record<string, (...args: Value[]) => Value> = {
    triggerBody: () => context.triggerBody,
    if: (c, a, b) => (c ? a : b),
    greater: (a, b) => (a as number) > (b as number),
    length: (x) => (typeof x === "string" || Array.isArray(x) ? x.length : Object.keys(x as object).length),
    string: (x) => (typeof x === "string" ? x : JSON.stringify(x)),
    setProperty: (o, k, v) => ({ ...(o as object), [k as string]: v }),
    removeProperty: (o, k) => {
      const copy = { ...(o as Record<string, unknown>) };
      delete copy[k as string];
      return copy;
    },
  };
  const parse = (): Value => {
    skip();
    let value: Value;
    if (source[pos] === "'") {
      const end = source.indexOf("'", pos + 1);
      value = source.slice(pos + 1, end);
      pos = end + 1;
    } else if (/[0-9]/.test(source[pos]!)) {
      const match = /^[0-9]+/.exec(source.slice(pos))![0];
      value = Number(match);
      pos += match.length;
    } else {
      const name = /^[A-Za-z]+/.exec(source.slice(pos))?.[0];
      if (!name || !functions[name]) throw new Error(`unknown function at ${pos} in ${source}`);
      pos += name.length;
      expect("(");
      const args: Value[] = [];
      skip();
      if (source[pos] === ")") pos++;
      else {
        for (;;) {
          args.push(parse());
          skip();
          if (source[pos] === ",") pos++;
          else break;
        }
        expect(")");
      }
      value = functions[name]!(...args);
    }
    for (;;) {
      skip();
      const optional = source[pos] === "?";
      if (!(source[pos] === "[" || (optional && source[pos + 1] === "["))) return value;
      pos += optional ? 2 : 1;
      const key = parse();
      expect("]");
      value = value == null ? undefined : (value as Record<string, unknown>)[key as string];
    }
  };
  const result = parse();
  skip();
  if (pos !== source.length) throw new Error(`unparsed rest at ${pos} in ${source}`);
  return result;
}
