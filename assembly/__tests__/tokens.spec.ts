import { estimateUtf8, TokenEstimator, TokenizerFamily, tokenizerFamilyFromName } from "../llm/tokens";

// Reference counts in comments come from gpt-tokenizer 4.0.0 (o200k_base / cl100k_base). Bounds
// are loose on purpose: test/estimator-accuracy.test.ts measures accuracy on real text; these pin
// down behaviour (structure, boundaries, robustness) and catch gross regressions.

function utf8(text: string): Uint8Array {
  return Uint8Array.wrap(String.UTF8.encode(text));
}

function bytes(values: u8[]): Uint8Array {
  const out = new Uint8Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = values[i];
  return out;
}

function feed(estimator: TokenEstimator, text: string): void {
  for (let i = 0; i < text.length; i++) {
    const cp = text.codePointAt(i);
    estimator.addCodePoint(cp);
    if (cp > 0xffff) i++;
  }
}

function estimate(text: string, family: TokenizerFamily = TokenizerFamily.O200K): i32 {
  return estimateUtf8(utf8(text), family);
}

/** An estimate that is not below `actual` by more than 15% nor above it by more than `over`. */
function near(text: string, family: TokenizerFamily, actual: i32, over: f64 = 0.5): void {
  const got = estimate(text, family);
  expect(got).toBeGreaterThanOrEqual(<i32>Math.floor(<f64>actual * 0.85), text);
  expect(got).toBeLessThanOrEqual(<i32>Math.ceil(<f64>actual * (1 + over)), text);
}

describe("tokenizerFamilyFromName", () => {
  it("knows both families and nothing else", () => {
    expect(tokenizerFamilyFromName("o200k")).toBe(TokenizerFamily.O200K);
    expect(tokenizerFamilyFromName("cl100k")).toBe(TokenizerFamily.CL100K);
    expect(tokenizerFamilyFromName("O200K")).toBe(-1);
    expect(tokenizerFamilyFromName("cl100k_base")).toBe(-1);
    expect(tokenizerFamilyFromName("")).toBe(-1);
  });

  it("keeps the family it was made for, defaulting to o200k", () => {
    expect(new TokenEstimator().family).toBe(TokenizerFamily.O200K);
    expect(new TokenEstimator(TokenizerFamily.CL100K).family).toBe(TokenizerFamily.CL100K);
    expect(new TokenEstimator(<TokenizerFamily>7).family).toBe(TokenizerFamily.O200K);
  });
});

describe("TokenEstimator", () => {
  it("counts nothing for empty text", () => {
    const estimator = new TokenEstimator();
    expect(estimator.tokens()).toBe(0);
    estimator.endText();
    expect(estimator.tokens()).toBe(0);
    expect(estimate("")).toBe(0);
    expect(estimate("", TokenizerFamily.CL100K)).toBe(0);
  });

  it("estimates plain English close to the real count", () => {
    // 10 tokens in both families
    near("The quick brown fox jumps over the lazy dog.", TokenizerFamily.O200K, 10);
    near("The quick brown fox jumps over the lazy dog.", TokenizerFamily.CL100K, 10);
    // 24 (o200k), 25 (cl100k)
    const sentence = "Admission control rejects a request before it reaches the model when its estimated prompt is larger than the limit configured for that model.";
    near(sentence, TokenizerFamily.O200K, 24);
    near(sentence, TokenizerFamily.CL100K, 25);
  });

  it("never counts fewer tokens than the tokenizers' pieces", () => {
    // " go" is one token each: 501 in both families
    let text = "";
    for (let i = 0; i < 500; i++) text += "go ";
    expect(estimate(text)).toBeGreaterThanOrEqual(501);
    expect(estimate(text, TokenizerFamily.CL100K)).toBeGreaterThanOrEqual(501);
  });

  it("charges long runs of random letters at their real rate", () => {
    // 200 pseudo-random lowercase letters: 101 (o200k), 107 (cl100k) tokens
    let x: u32 = 1;
    let text = "";
    for (let i = 0; i < 200; i++) {
      x = x * 1103515245 + 12345;
      text += String.fromCharCode(0x61 + <i32>((x >>> 16) % 26));
    }
    expect(estimate(text)).toBeGreaterThanOrEqual(86);
    expect(estimate(text, TokenizerFamily.CL100K)).toBeGreaterThanOrEqual(91);
  });

  it("counts digits in groups of up to three", () => {
    // "123" "456" "789" "0"
    expect(estimate("1234567890")).toBeGreaterThanOrEqual(4);
    expect(estimate("1234567890")).toBeLessThanOrEqual(6);
    // each group costs: more digits never make fewer tokens
    expect(estimate("123456789012345678901234567890")).toBeGreaterThan(estimate("1234567890"));
    near("Call 555-0142 before 2024-06-30.", TokenizerFamily.O200K, 15);
  });

  it("estimates code", () => {
    // 14 tokens in both families
    near("function add(a, b) {\n  return a + b;\n}\n", TokenizerFamily.O200K, 14);
    near("function add(a, b) {\n  return a + b;\n}\n", TokenizerFamily.CL100K, 14);
    // 10 (o200k), 8 (cl100k): camelCase splits into parts
    near("const userName = getUserName(request.headers);", TokenizerFamily.O200K, 10, 0.8);
    near("const userName = getUserName(request.headers);", TokenizerFamily.CL100K, 8, 1.0);
  });

  it("estimates CJK at about a token per ideograph, more for cl100k", () => {
    const chinese = "人人生而自由，在尊严和权利上一律平等。"; // 15 (o200k), 21 (cl100k)
    near(chinese, TokenizerFamily.O200K, 15);
    near(chinese, TokenizerFamily.CL100K, 21);
    const japanese = "すべての人間は、生まれながらにして自由であり、かつ、尊厳と権利とについて平等である。"; // 35, 45
    near(japanese, TokenizerFamily.O200K, 35);
    near(japanese, TokenizerFamily.CL100K, 45);
    const korean = "모든 인간은 태어날 때부터 자유로우며 그 존엄과 권리에 있어 동등하다."; // 24, 41
    near(korean, TokenizerFamily.O200K, 24);
    near(korean, TokenizerFamily.CL100K, 41);
  });

  it("charges cl100k more than o200k for Cyrillic", () => {
    const russian = "Все люди рождаются свободными и равными в своем достоинстве и правах."; // 17, 35
    near(russian, TokenizerFamily.O200K, 17);
    near(russian, TokenizerFamily.CL100K, 35);
    expect(estimate(russian, TokenizerFamily.CL100K)).toBeGreaterThan(estimate(russian, TokenizerFamily.O200K));
  });

  it("counts emoji as several tokens each", () => {
    // 5 (o200k), 9 (cl100k)
    near("👍🎉🚀", TokenizerFamily.O200K, 5, 1.0);
    near("👍🎉🚀", TokenizerFamily.CL100K, 9);
    // 3 (o200k), 4 (cl100k)
    expect(estimate("Great job 👍")).toBeGreaterThanOrEqual(3);
  });

  it("includes an unfinished word in tokens() without ending it", () => {
    const estimator = new TokenEstimator();
    feed(estimator, "internationalization");
    const pending = estimator.tokens();
    expect(pending).toBeGreaterThan(0);
    // reading twice changes nothing
    expect(estimator.tokens()).toBe(pending);
    feed(estimator, "s");
    expect(estimator.tokens()).toBeGreaterThanOrEqual(pending);
  });

  it("treats endText as a boundary between separately tokenized strings", () => {
    const joined = new TokenEstimator();
    feed(joined, "helloworld");
    const split = new TokenEstimator();
    feed(split, "hello");
    split.endText();
    feed(split, "world");
    // one word piece against two
    expect(split.tokens()).toBeGreaterThan(joined.tokens());

    // a word after endText takes no leading space from the string before
    const spaced = new TokenEstimator();
    feed(spaced, "a ");
    spaced.endText();
    feed(spaced, "b");
    const plain = new TokenEstimator();
    feed(plain, "a b");
    expect(spaced.tokens()).toBeGreaterThan(plain.tokens());

    // endText twice, or with nothing pending, adds nothing
    const twice = new TokenEstimator();
    feed(twice, "hello");
    twice.endText();
    const once = twice.tokens();
    twice.endText();
    twice.endText();
    expect(twice.tokens()).toBe(once);
  });

  it("adds strings up, each as if tokenized alone", () => {
    const parts = ["You are a helpful assistant.", "Summarize this text in one line.", "こんにちは"];
    const together = new TokenEstimator();
    let sum = 0;
    for (let i = 0; i < parts.length; i++) {
      feed(together, parts[i]);
      together.endText();
      sum += estimate(parts[i]);
    }
    // Rounding happens once for the whole, and the language signals see all parts at once, so the
    // two differ a little, never by much.
    expect(together.tokens()).toBeLessThanOrEqual(sum + 1);
    expect(together.tokens()).toBeGreaterThanOrEqual(sum - parts.length - 1);
  });

  it("starts over on reset", () => {
    const text = "Reset makes an estimator reusable across requests: 42 tokens or so.";
    const fresh = new TokenEstimator(TokenizerFamily.CL100K);
    feed(fresh, text);
    const expected = fresh.tokens();

    const reused = new TokenEstimator(TokenizerFamily.CL100K);
    feed(reused, "Ünïcödé, 数字 1234 and a pending wor");
    reused.reset();
    expect(reused.tokens()).toBe(0);
    feed(reused, text);
    expect(reused.tokens()).toBe(expected);
  });

  it("accepts any i32 without trapping", () => {
    const estimator = new TokenEstimator();
    const odd: i32[] = [-1, i32.MIN_VALUE, i32.MAX_VALUE, 0x110000, 0x1fffff, 0xd800, 0xdfff, 0xfffd, 0, 0x7f, 0x10ffff, 0x200b, 0xfeff];
    for (let i = 0; i < odd.length; i++) estimator.addCodePoint(odd[i]);
    // out-of-range values count like invalid bytes: one token each, at least
    expect(estimator.tokens()).toBeGreaterThanOrEqual(4);
  });
});

// Texts whose ASCII runs take addAscii's fast paths: chained spaced words (lower and capitalized),
// "th" across a space, runs of spaces, digits, marks and newlines, numbers joined by single marks,
// and words ending at other scripts.
const RUN_TEXTS: string[] = [
  "the quick brown fox jumps over the lazy dog",
  "The Cat sat. A dog, the end",
  "wit hat t hat th Th tHe",
  "a b c d e f g h i",
  "word  word \tword\t word\n word",
  "    indented(x) {\n        return 1234567;\n\n\n    }",
  "x=  42;;; ))) ... ,, \n\n  \r\n\t 0.5e10",
  "café olé naïve, ciao amico, ok",
  "Привет мир word слово Word",
  "camelCaseWord HTTPServer getID x86_64",
  "18,17,19,20,1234567,8 2024-01-31 v1.2.3, 0.5;7 1,,2 3,a 4.",
  "Ελληνικά Բարեւ שָׁלוֹם مرحبا नमस्ते สวัสดี 한국어 カタカナ、ひらがなと漢字。ꙮж日本",
];

describe("estimateUtf8", () => {
  it("takes runs in bytes as it takes them a code point at a time", () => {
    for (let i = 0; i < RUN_TEXTS.length; i++) {
      const text = RUN_TEXTS[i];
      for (let family = 0; family <= 1; family++) {
        const estimator = new TokenEstimator(<TokenizerFamily>family);
        feed(estimator, text);
        expect(estimateUtf8(utf8(text), <TokenizerFamily>family)).toBe(estimator.tokens(), text);
      }
    }
  });

  it("takes runs of script letters in bytes as it takes them a code point at a time", () => {
    // addScriptRun takes whole blocks of 64 code points: the first two and last two of every
    // block below U+D800, thirty in a row after a letter of another script. A letter given the wrong
    // script moves the estimate by its script's weight thirty times.
    for (let cp = 0x80; cp < 0xd800; cp++) {
      if (<u32>((cp & 63) - 2) < 60) continue;
      const text = "ж" + String.fromCodePoint(cp).repeat(30);
      const estimator = new TokenEstimator(TokenizerFamily.CL100K);
      feed(estimator, text);
      expect(estimateUtf8(utf8(text), TokenizerFamily.CL100K)).toBe(estimator.tokens(), cp.toString(16));
    }
  });

  it("carries a run on across a cut between two calls", () => {
    for (let i = 0; i < RUN_TEXTS.length; i++) {
      const text = utf8(RUN_TEXTS[i]);
      const whole = estimateUtf8(text, TokenizerFamily.O200K);
      for (let cut = 0; cut <= text.length; cut++) {
        // a cut inside a multi-byte character would make two invalid halves of it
        if (cut < text.length && (text[cut] & 0xc0) == 0x80) continue;
        const estimator = new TokenEstimator();
        estimator.addUtf8(text.subarray(0, cut));
        estimator.addUtf8(text.subarray(cut));
        expect(estimator.tokens()).toBe(whole, RUN_TEXTS[i]);
      }
    }
  });

  it("matches feeding the decoded code points", () => {
    const text = "Mixed: English, Ελληνικά, русский, 中文, 日本語, 한국어, emoji 🎉, tabs\tand\nnewlines.";
    const estimator = new TokenEstimator(TokenizerFamily.CL100K);
    feed(estimator, text);
    expect(estimateUtf8(utf8(text), TokenizerFamily.CL100K)).toBe(estimator.tokens());
  });

  it("counts each invalid byte as one token", () => {
    expect(estimateUtf8(bytes([0xff]), TokenizerFamily.O200K)).toBe(1);
    expect(estimateUtf8(bytes([0xff, 0xfe, 0x80]), TokenizerFamily.O200K)).toBe(3);
    // overlong "/" and an encoded surrogate: every byte invalid
    expect(estimateUtf8(bytes([0xc0, 0xaf]), TokenizerFamily.O200K)).toBe(2);
    expect(estimateUtf8(bytes([0xed, 0xa0, 0x80]), TokenizerFamily.O200K)).toBe(3);
    // past U+10FFFF
    expect(estimateUtf8(bytes([0xf4, 0x90, 0x80, 0x80]), TokenizerFamily.CL100K)).toBe(4);
  });

  it("keeps valid text around invalid bytes", () => {
    const valid = estimateUtf8(utf8("ok"), TokenizerFamily.O200K);
    // "ok" then a sequence cut short at the end
    expect(estimateUtf8(bytes([0x6f, 0x6b, 0xe4, 0xb8]), TokenizerFamily.O200K)).toBe(valid + 2);
    // an invalid byte between two words ends the first
    const around = estimateUtf8(bytes([0x6f, 0x6b, 0xff, 0x6f, 0x6b]), TokenizerFamily.O200K);
    expect(around).toBeGreaterThanOrEqual(2 * valid);
    // a valid 3-byte sequence after a stray continuation byte still decodes
    expect(estimateUtf8(bytes([0x80, 0xe4, 0xb8, 0xad]), TokenizerFamily.O200K)).toBe(1 + estimateUtf8(utf8("中"), TokenizerFamily.O200K));
  });
});
