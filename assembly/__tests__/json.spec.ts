import { JsonKind, JsonReader } from "../json/reader";
import { parseJson } from "../json/value";
import { numberText } from "../json/config-reader";
import { TokenEstimator } from "../llm/tokens";

function reader(text: string): JsonReader {
  return new JsonReader(Uint8Array.wrap(String.UTF8.encode(text)));
}

function bytes(values: u8[]): Uint8Array {
  const out = new Uint8Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = values[i];
  return out;
}

function skipsCleanly(text: string): bool {
  const r = reader(text);
  return r.skipValue() && r.finish();
}

describe("JsonReader", () => {
  it("walks objects and arrays and reads scalars", () => {
    const r = reader(' { "a" : [1, -2.5e1, true, false, null], "b": "x" } ');
    expect(r.enterObject()).toBe(true);
    expect(r.nextMember()).toBe(true);
    expect(r.keyIs("a")).toBe(true);
    expect(r.enterArray()).toBe(true);
    expect(r.nextElement()).toBe(true);
    expect(r.readNumber()).toBe(1.0);
    expect(r.isInteger).toBe(true);
    expect(r.nextElement()).toBe(true);
    expect(r.readNumber()).toBe(-25.0);
    expect(r.isInteger).toBe(false);
    expect(r.nextElement()).toBe(true);
    expect(r.readBool()).toBe(true);
    expect(r.nextElement()).toBe(true);
    expect(r.peek()).toBe(JsonKind.False);
    expect(r.readBool()).toBe(false);
    expect(r.nextElement()).toBe(true);
    expect(r.readNull()).toBe(true);
    expect(r.nextElement()).toBe(false);
    expect(r.nextMember()).toBe(true);
    expect(r.key()).toBe("b");
    expect(r.readString()).toBe("x");
    expect(r.nextMember()).toBe(false);
    expect(r.finish()).toBe(true);
  });

  it("decodes escapes, surrogate pairs and lone surrogates", () => {
    const r = reader('"a\\n\\u00e9\\ud83d\\ude00\\ud800x\\/"');
    expect(r.readString()).toBe("a\né😀\uFFFDx/");
  });

  it("compares escaped keys by their decoded text", () => {
    const r = reader('{"mod\\u0065l": 1}');
    r.enterObject();
    r.nextMember();
    expect(r.keyIs("model")).toBe(true);
  });

  it("accepts valid JSON", () => {
    expect(skipsCleanly("[]")).toBe(true);
    expect(skipsCleanly("{}")).toBe(true);
    expect(skipsCleanly('{"a":{"b":[{"c":"d"}]}}')).toBe(true);
    expect(skipsCleanly("0")).toBe(true);
    expect(skipsCleanly('"\u4e2d\u6587"')).toBe(true);
  });

  it("refuses malformed JSON without trapping", () => {
    const bad = ["", "{", "[1,]", '{"a":1,}', '{"a" 1}', "01", "1.", "-", "1e", "tru", "nul", '"abc', '"\\x"', '"\\u12"',
      "[1 2]", '{"a":1}x', "NaN", "Infinity", "{'a':1}", '"a\tb"', "[", "]", "{]", "[}"];
    for (let i = 0; i < bad.length; i++) {
      expect(skipsCleanly(bad[i])).toBe(false, bad[i]);
    }
  });

  it("refuses invalid UTF-8 in strings", () => {
    // 0xC0 0x80 is an overlong NUL, 0xED 0xA0 0x80 an encoded surrogate, 0xFF never valid.
    const cases: u8[][] = [[0x22, 0xc0, 0x80, 0x22], [0x22, 0xed, 0xa0, 0x80, 0x22], [0x22, 0xff, 0x22], [0x22, 0xe4, 0xb8, 0x22], [0x22, 0xf4, 0x90, 0x80, 0x80, 0x22]];
    for (let i = 0; i < cases.length; i++) {
      const r = new JsonReader(bytes(cases[i]));
      expect(r.skipValue()).toBe(false);
      expect(r.error).toBe("invalid UTF-8 in string");
    }
  });

  it("feeds the estimator a string as decoded, escapes and runs cut by them included", () => {
    const json = '"Line one\\nline \\"two\\" \\u00e9t\\u00E9 \\ud83d\\ude00 tab\\there \\\\ back\\/slash th\\u0065 end"';
    const decoded = "Line one\nline \"two\" été 😀 tab\there \\ back/slash the end";
    const read = new TokenEstimator();
    const r = reader(json);
    expect(r.readStringInto(read)).toBe(true);
    expect(r.finish()).toBe(true);
    const direct = new TokenEstimator();
    for (let i = 0; i < decoded.length; i++) {
      const cp = decoded.codePointAt(i);
      direct.addCodePoint(cp);
      if (cp > 0xffff) i++;
    }
    direct.endText();
    expect(read.tokens()).toBe(direct.tokens());
  });

  it("stops a string at the end of the input, escapes included", () => {
    const cut: string[] = ['"abc', '"abc\\', '"abc\\n', '"a\\u00', '"a\\ud83d\\u', '"word word'];
    for (let i = 0; i < cut.length; i++) {
      const r = reader(cut[i]);
      expect(r.readStringInto(new TokenEstimator())).toBe(false, cut[i]);
      expect(r.failed).toBe(true, cut[i]);
    }
  });

  it("bounds nesting depth instead of recursing without limit", () => {
    let deep = "";
    for (let i = 0; i < 10000; i++) deep += "[";
    const r = reader(deep);
    expect(r.skipValue()).toBe(false);
    expect(r.error).toBe("nesting deeper than 64 levels");
  });

  it("records where a scalar lies", () => {
    const r = reader('{"max_tokens": 1234}');
    r.enterObject();
    r.nextMember();
    r.readNumber();
    expect(r.lastValue.start).toBe(15);
    expect(r.lastValue.end).toBe(19);
  });
});

describe("parseJson", () => {
  it("builds a tree", () => {
    const result = parseJson('{"a": [1, "two"], "b": {"c": true}}');
    expect(result.error).toBe("");
    const root = result.value!;
    expect(root.get("a")!.items.length).toBe(2);
    expect(root.get("a")!.items[1].text).toBe("two");
    expect(root.get("b")!.get("c")!.bool).toBe(true);
    expect(root.get("missing")).toBeNull();
  });

  it("refuses duplicate keys, naming them", () => {
    const result = parseJson('{"models": {"a": 1, "a": 2}}');
    expect(result.value).toBeNull();
    expect(result.error).toBe('duplicate key "a" in models at byte 24');
  });
});

describe("numberText", () => {
  test("whole numbers keep a .0, fractions up to six decimals", () => {
    expect(numberText(0)).toBe("0.0");
    expect(numberText(1)).toBe("1.0");
    expect(numberText(1.5)).toBe("1.5");
    expect(numberText(0.001)).toBe("0.001");
    expect(numberText(-2.25)).toBe("-2.25");
    expect(numberText(90.05 + 9.5)).toBe("99.55");
    expect(numberText(0.1 + 0.2)).toBe("0.3");
    expect(numberText(0.9999999)).toBe("1.0");
  });

  test("an exponent beyond 1e15 and below 1e-6", () => {
    expect(numberText(1e300)).toBe("1e+300");
    expect(numberText(1e15)).toBe("1e+15");
    expect(numberText(9.99999999e20)).toBe("1e+21");
    expect(numberText(-1.5e-9)).toBe("-1.5e-9");
    expect(numberText(Infinity)).toBe("Infinity");
    expect(numberText(NaN)).toBe("NaN");
  });
});
