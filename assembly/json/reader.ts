// A pull reader over JSON bytes: strict RFC 8259 syntax, strict UTF-8, bounded nesting, and no
// exceptions. Request bodies are read with it once, without building a tree; configs build a tree
// on top of it (value.ts). Any fault sets `error` and every later call returns false, so
// callers check once at the end instead of after every step.
import { classesAccepting, decodeUtf8At, Machine, TokenEstimator } from "../llm/tokens";

export const DEFAULT_MAX_DEPTH: i32 = 64;

const QUOTE: u8 = 0x22;
const BACKSLASH: u8 = 0x5c;
const COMMA: u8 = 0x2c;
const COLON: u8 = 0x3a;
const OPEN_OBJECT: u8 = 0x7b;
const CLOSE_OBJECT: u8 = 0x7d;
const OPEN_ARRAY: u8 = 0x5b;
const CLOSE_ARRAY: u8 = 0x5d;
const REPLACEMENT_CHARACTER: i32 = 0xfffd;
/**
 * Python's json.loads refuses an integer literal longer than this (int max_str_digits, 4300 by
 * default): a body holding one is no request at all to a Python model server, so it is refused here.
 */
const MAX_INTEGER_DIGITS: i32 = 4300;

// 1 for the bytes a string holds as they are: ASCII from space up, but the quote and backslash.
const PLAIN_STRING_BYTE: usize = memory.data<u8>([
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1,
  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
]);

// The token estimator's class table for the same bytes.
const PLAIN_STRING_CLASSES: usize = classesAccepting(PLAIN_STRING_BYTE);

export enum JsonKind {
  Invalid = 0,
  Object,
  Array,
  String,
  Number,
  True,
  False,
  Null,
}

/** Where a scalar value lies in the input, for callers that rewrite it in place. */
export class JsonSpan {
  constructor(public start: i32 = 0, public end: i32 = 0) {}
}

export class JsonReader {
  private pos: i32 = 0;
  private depth: i32 = 0;
  /** Per open container: whether it has yielded its first member yet. */
  private first: StaticArray<bool>;
  error: string = "";
  errorAt: i32 = -1;
  // Whether `error` is set, kept apart: every step of the reader asks, and a flag is one load where a
  // string's length is two.
  private hasError: bool = false;
  /** The last key read by nextMember: raw bytes between the quotes. */
  private keyStart: i32 = 0;
  private keyEnd: i32 = 0;
  private keyEscaped: bool = false;
  private keyDecoded: string | null = null;
  /** Bounds of the last scalar read (string including quotes, number, literal). */
  lastValue: JsonSpan = new JsonSpan();
  /**
   * Counts lone UTF-16 surrogate escapes met. They decode to U+FFFD here, while JavaScript and
   * Python keep the lone half: a string holding one reads differently in a model server.
   */
  loneSurrogates: i32 = 0;

  // Where the bytes lie and how many there are, read once: Uint8Array's length getter is an
  // out-of-line call, and every step of the scan needs the length.
  private base: usize;
  private length: i32;

  /** `bytes` stays referenced here so that the collector keeps the memory at `base` alive. */
  constructor(private bytes: Uint8Array, private maxDepth: i32 = DEFAULT_MAX_DEPTH) {
    this.first = new StaticArray<bool>(maxDepth + 1);
    this.base = bytes.dataStart;
    this.length = bytes.length;
  }

  // Inlined: every step of the reader asks.
  @inline get failed(): bool {
    return this.hasError;
  }

  /**
   * Where the reader stands in the input: right after the last thing read, or at the next value once
   * peek() has passed the whitespace before it. A whole object or array lies between the two.
   */
  get offset(): i32 {
    return this.pos;
  }

  fail(message: string): bool {
    if (!this.hasError) {
      this.error = message;
      this.errorAt = this.pos;
      this.hasError = message.length > 0;
    }
    return false;
  }

  /** The kind of the next value, without consuming it. */
  peek(): JsonKind {
    if (this.failed) return JsonKind.Invalid;
    this.skipWhitespace();
    if (this.pos >= this.length) return JsonKind.Invalid;
    const c = byteAt(this.base, this.pos);
    if (c == OPEN_OBJECT) return JsonKind.Object;
    if (c == OPEN_ARRAY) return JsonKind.Array;
    if (c == QUOTE) return JsonKind.String;
    if (c == 0x2d || (c >= 0x30 && c <= 0x39)) return JsonKind.Number;
    if (c == 0x74) return JsonKind.True;
    if (c == 0x66) return JsonKind.False;
    if (c == 0x6e) return JsonKind.Null;
    return JsonKind.Invalid;
  }

  enterObject(): bool {
    return this.enter(OPEN_OBJECT, "expected an object");
  }

  enterArray(): bool {
    return this.enter(OPEN_ARRAY, "expected an array");
  }

  private enter(open: u8, message: string): bool {
    if (this.failed) return false;
    this.skipWhitespace();
    if (this.pos >= this.length || byteAt(this.base, this.pos) != open) return this.fail(message);
    if (this.depth >= this.maxDepth) return this.fail("nesting deeper than " + this.maxDepth.toString() + " levels");
    this.pos++;
    this.depth++;
    unchecked((this.first[this.depth] = true));
    return true;
  }

  /**
   * Advances to the next member of the open object and reads its key; false at the closing brace
   * (which it consumes) or on error. The value must then be read or skipped.
   */
  nextMember(): bool {
    if (!this.nextItem(CLOSE_OBJECT)) return false;
    this.skipWhitespace();
    if (this.pos >= this.length || byteAt(this.base, this.pos) != QUOTE) return this.fail("expected a key");
    const start = this.pos + 1;
    if (!this.scanString(null)) return false;
    this.keyStart = start;
    this.keyEnd = this.pos - 1;
    this.keyEscaped = this.stringHadEscape;
    this.keyDecoded = null;
    this.skipWhitespace();
    if (this.pos >= this.length || byteAt(this.base, this.pos) != COLON) return this.fail("expected ':'");
    this.pos++;
    return true;
  }

  /** Advances to the next element of the open array; false at the closing bracket or on error. */
  nextElement(): bool {
    return this.nextItem(CLOSE_ARRAY);
  }

  private nextItem(close: u8): bool {
    if (this.failed) return false;
    this.skipWhitespace();
    if (this.pos >= this.length) return this.fail("unexpected end of input");
    const c = byteAt(this.base, this.pos);
    const isFirst = unchecked(this.first[this.depth]);
    if (c == close) {
      this.pos++;
      this.depth--;
      return false;
    }
    if (isFirst) {
      unchecked((this.first[this.depth] = false));
      return true;
    }
    if (c != COMMA) return this.fail("expected ',' or a closing bracket");
    this.pos++;
    this.skipWhitespace();
    if (this.pos < this.length && byteAt(this.base, this.pos) == close) return this.fail("trailing comma");
    return true;
  }

  /** The current key, decoded (escapes resolved). */
  key(): string {
    if (this.keyDecoded == null) {
      this.keyDecoded = this.keyEscaped ? this.decodeAt(this.keyStart - 1) : String.UTF8.decodeUnsafe(this.base + <usize>this.keyStart, this.keyEnd - this.keyStart);
    }
    return this.keyDecoded!;
  }

  /** Whether the current key equals an ASCII name, comparing decoded text without allocating when it can. */
  keyIs(name: string): bool {
    if (this.keyEscaped) return this.key() == name;
    const length = this.keyEnd - this.keyStart;
    if (length != name.length) return false;
    // The name's UTF-16 units read directly: charCodeAt is a call with its own bounds check.
    const key = this.base + <usize>this.keyStart;
    const units = changetype<usize>(name);
    for (let i = 0; i < length; i++) {
      if (<i32>load<u8>(key + <usize>i) != <i32>load<u16>(units + (<usize>i << 1))) return false;
    }
    return true;
  }

  /** Reads a string value and returns it decoded; null on error or when the value is not a string. */
  readString(): string | null {
    if (this.peek() != JsonKind.String) {
      this.fail("expected a string");
      return null;
    }
    const start = this.pos;
    if (!this.scanString(null)) return null;
    this.lastValue.start = start;
    this.lastValue.end = this.pos;
    if (!this.stringHadEscape) {
      return String.UTF8.decodeUnsafe(this.base + <usize>start + 1, this.pos - start - 2);
    }
    return this.decodeAt(start);
  }

  /** Reads a string value, feeding its decoded code points to the estimator; no allocation. */
  readStringInto(estimator: TokenEstimator): bool {
    if (this.peek() != JsonKind.String) return this.fail("expected a string");
    const start = this.pos;
    if (!this.scanString(estimator.machine)) return false;
    estimator.endText();
    this.lastValue.start = start;
    this.lastValue.end = this.pos;
    return true;
  }

  /** Reads a number; NaN on error. `isInteger` tells whether it was written without fraction or exponent. */
  isInteger: bool = false;
  readNumber(): f64 {
    if (this.peek() != JsonKind.Number) {
      this.fail("expected a number");
      return NaN;
    }
    const start = this.pos;
    let value: f64 = 0;
    let negative = false;
    if (byteAt(this.base, this.pos) == 0x2d) {
      negative = true;
      this.pos++;
    }
    if (this.pos >= this.length || !isDigit(byteAt(this.base, this.pos))) {
      this.fail("invalid number");
      return NaN;
    }
    if (byteAt(this.base, this.pos) == 0x30) {
      this.pos++;
      if (this.pos < this.length && isDigit(byteAt(this.base, this.pos))) {
        this.fail("leading zero in number");
        return NaN;
      }
    } else {
      while (this.pos < this.length && isDigit(byteAt(this.base, this.pos))) {
        value = value * 10 + <f64>(byteAt(this.base, this.pos) - 0x30);
        this.pos++;
      }
    }
    const integerDigits = this.pos - start - (negative ? 1 : 0);
    let integer = true;
    if (this.pos < this.length && byteAt(this.base, this.pos) == 0x2e) {
      integer = false;
      this.pos++;
      if (!this.skipDigits()) return NaN;
    }
    if (this.pos < this.length && (byteAt(this.base, this.pos) | 0x20) == 0x65) {
      integer = false;
      this.pos++;
      if (this.pos < this.length && (byteAt(this.base, this.pos) == 0x2b || byteAt(this.base, this.pos) == 0x2d)) this.pos++;
      if (!this.skipDigits()) return NaN;
    }
    if (integer && integerDigits > MAX_INTEGER_DIGITS) {
      this.fail("integer of more than " + MAX_INTEGER_DIGITS.toString() + " digits");
      return NaN;
    }
    this.isInteger = integer;
    this.lastValue.start = start;
    this.lastValue.end = this.pos;
    if (!integer) {
      value = F64.parseFloat(String.UTF8.decodeUnsafe(this.base + <usize>start, this.pos - start));
      return value;
    }
    return negative ? -value : value;
  }

  /** Reads true or false; false also on error (check `failed`). */
  readBool(): bool {
    const kind = this.peek();
    if (kind == JsonKind.True) return this.literal("true");
    if (kind == JsonKind.False) {
      this.literal("false");
      return false;
    }
    return this.fail("expected true or false");
  }

  readNull(): bool {
    if (this.peek() != JsonKind.Null) return this.fail("expected null");
    return this.literal("null");
  }

  /** Skips one value of any kind, validating it. */
  skipValue(): bool {
    return this.walkValue(null, false);
  }

  /**
   * Skips one value, feeding every string (and, when `withKeys`, every key) to the estimator:
   * for parts of a prompt that reach the model as serialized JSON (tool definitions, tool inputs).
   */
  skipValueInto(estimator: TokenEstimator, withKeys: bool): bool {
    return this.walkValue(estimator, withKeys);
  }

  private walkValue(estimator: TokenEstimator | null, withKeys: bool): bool {
    switch (this.peek()) {
      case JsonKind.Object: {
        if (!this.enterObject()) return false;
        while (this.nextMember()) {
          if (estimator != null && withKeys) this.feedKey(estimator);
          if (!this.walkValue(estimator, withKeys)) return false;
        }
        return !this.failed;
      }
      case JsonKind.Array: {
        if (!this.enterArray()) return false;
        while (this.nextElement()) {
          if (!this.walkValue(estimator, withKeys)) return false;
        }
        return !this.failed;
      }
      case JsonKind.String: {
        if (estimator != null) return this.readStringInto(estimator);
        const start = this.pos;
        if (!this.scanString(null)) return false;
        this.lastValue.start = start;
        this.lastValue.end = this.pos;
        return true;
      }
      case JsonKind.Number:
        return !isNaN(this.readNumber()) || !this.failed;
      case JsonKind.True:
        return this.literal("true");
      case JsonKind.False:
        return this.literal("false");
      case JsonKind.Null:
        return this.literal("null");
      default:
        return this.fail(this.pos >= this.length ? "unexpected end of input" : "unexpected character");
    }
  }

  private feedKey(estimator: TokenEstimator): void {
    const saved = this.pos;
    this.pos = this.keyStart - 1;
    this.scanString(estimator.machine);
    estimator.endText();
    this.pos = saved;
  }

  /** After the top-level value: only whitespace may remain. */
  finish(): bool {
    if (this.failed) return false;
    this.skipWhitespace();
    if (this.pos != this.length) return this.fail("unexpected data after the JSON value");
    return true;
  }

  private literal(word: string): bool {
    const length = word.length;
    if (this.pos + length > this.length) return this.fail("unexpected end of input");
    for (let i = 0; i < length; i++) {
      if (<i32>byteAt(this.base, this.pos + i) != word.charCodeAt(i)) return this.fail("invalid literal");
    }
    this.lastValue.start = this.pos;
    this.pos += length;
    this.lastValue.end = this.pos;
    return true;
  }

  private skipDigits(): bool {
    const start = this.pos;
    while (this.pos < this.length && isDigit(byteAt(this.base, this.pos))) this.pos++;
    if (this.pos == start) return this.fail("invalid number");
    return true;
  }

  // Inlined: it runs before every token.
  @inline private skipWhitespace(): void {
    const base = this.base;
    const length = this.length;
    let pos = this.pos;
    while (pos < length) {
      const c = byteAt(base, pos);
      if (c != 0x20 && c != 0x0a && c != 0x0d && c != 0x09) break;
      pos++;
    }
    this.pos = pos;
  }

  private stringHadEscape: bool = false;

  /**
   * Scans a string starting at the opening quote, validating escapes and UTF-8; with an estimator's
   * machine, feeds it each decoded code point. Leaves `pos` after the closing quote. The machine, not
   * the estimator: the machine's methods work on its plain memory directly.
   */
  private scanString(machine: Machine | null): bool {
    const length = this.length;
    const base = this.base;
    let pos = this.pos + 1;
    let escaped = false;
    while (true) {
      // Runs of plain ASCII are most of any text: the estimator takes them whole.
      if (machine != null) {
        pos = <i32>(machine.addAscii(base + <usize>pos, base + <usize>length, PLAIN_STRING_CLASSES) - base);
      } else {
        while (pos < length && load<u8>(PLAIN_STRING_BYTE + <usize>load<u8>(base + <usize>pos)) != 0) pos++;
      }
      if (pos >= length) {
        this.pos = pos;
        return this.fail("unterminated string");
      }
      const c = <i32>byteAt(base, pos);
      if (c == QUOTE) {
        pos++;
        break;
      }
      if (c < 0x20) {
        this.pos = pos;
        return this.fail("control character in string");
      }
      if (c == BACKSLASH) {
        escaped = true;
        // One-letter escapes (\n, \") are most escapes in prompts: no trip through readEscape.
        const simple = pos + 1 < length ? simpleEscape(<i32>byteAt(base, pos + 1)) : 0;
        if (simple != 0) {
          pos += 2;
          if (machine != null) machine.addCodePoint(simple);
          continue;
        }
        this.pos = pos;
        const cp = this.readEscape();
        if (cp < 0) return false;
        pos = this.pos;
        if (machine != null) machine.addCodePoint(cp);
        continue;
      }
      // Non-ASCII characters come in runs too (words of other scripts): decoded one after another
      // without a trip back through the ASCII loop for each.
      do {
        const cp = decodeUtf8At(base, length, pos);
        if (cp < 0) {
          this.pos = pos;
          return this.fail("invalid UTF-8 in string");
        }
        pos += cp >>> 21;
        if (machine != null) {
          machine.addCodePoint(cp & 0x1fffff);
          pos = <i32>(machine.addScriptRun(base + <usize>pos, base + <usize>length) - base);
        }
      } while (pos < length && byteAt(base, pos) >= 0x80);
    }
    this.pos = pos;
    this.stringHadEscape = escaped;
    return true;
  }

  /** Reads one escape at `pos` (the backslash); returns the code point or -1 on error. */
  private readEscape(): i32 {
    const base = this.base;
    const length = this.length;
    if (this.pos + 1 >= length) {
      this.fail("unterminated escape");
      return -1;
    }
    const e = <i32>byteAt(base, this.pos + 1);
    this.pos += 2;
    const simple = simpleEscape(e);
    if (simple != 0) return simple;
    if (e != 0x75) {
      this.fail("invalid escape");
      return -1;
    }
    const high = this.readHex4();
    if (high < 0) return -1;
    if (high >= 0xd800 && high <= 0xdbff) {
      // A pair written as two escapes; a lone half decodes to U+FFFD, as lenient parsers do.
      if (this.pos + 1 < length && byteAt(base, this.pos) == BACKSLASH && byteAt(base, this.pos + 1) == 0x75) {
        const saved = this.pos;
        this.pos += 2;
        const low = this.readHex4();
        if (low < 0) return -1;
        if (low >= 0xdc00 && low <= 0xdfff) return 0x10000 + ((high - 0xd800) << 10) + (low - 0xdc00);
        this.pos = saved;
      }
      this.loneSurrogates++;
      return REPLACEMENT_CHARACTER;
    }
    if (high >= 0xdc00 && high <= 0xdfff) {
      this.loneSurrogates++;
      return REPLACEMENT_CHARACTER;
    }
    return high;
  }

  private readHex4(): i32 {
    if (this.pos + 4 > this.length) {
      this.fail("unterminated escape");
      return -1;
    }
    let value = 0;
    for (let i = 0; i < 4; i++) {
      const digit = hexValue(byteAt(this.base, this.pos + i));
      if (digit < 0) {
        this.fail("invalid \\u escape");
        return -1;
      }
      value = (value << 4) | digit;
    }
    this.pos += 4;
    return value;
  }

  /** Decodes the string whose opening quote is at `start` (already validated). */
  private decodeAt(start: i32): string {
    const saved = this.pos;
    this.pos = start + 1;
    let out = "";
    const base = this.base;
    let runStart = this.pos;
    while (this.pos < this.length) {
      const c = byteAt(base, this.pos);
      if (c == QUOTE) break;
      if (c != BACKSLASH) {
        this.pos++;
        continue;
      }
      out += String.UTF8.decodeUnsafe(base + <usize>runStart, this.pos - runStart);
      const cp = this.readEscape();
      out += String.fromCodePoint(cp < 0 ? REPLACEMENT_CHARACTER : cp);
      runStart = this.pos;
    }
    out += String.UTF8.decodeUnsafe(base + <usize>runStart, this.pos - runStart);
    this.pos = saved;
    return out;
  }
}

// Byte reads go straight to linear memory: Uint8Array's indexed access stays an out-of-line call
// per byte even when unchecked, which was a fifth of the body scan's time (npm run bench profile).
// Every caller has already checked the index against the length.
// @ts-ignore: decorator
@inline function byteAt(base: usize, index: i32): u8 {
  return load<u8>(base + <usize>index);
}

/** The character a one-letter escape stands for (`n` for \n), or 0 when `e` is no such letter. */
// @ts-ignore: decorator
@inline function simpleEscape(e: i32): i32 {
  switch (e) {
    case 0x22: return 0x22;
    case 0x5c: return 0x5c;
    case 0x2f: return 0x2f;
    case 0x62: return 0x08;
    case 0x66: return 0x0c;
    case 0x6e: return 0x0a;
    case 0x72: return 0x0d;
    case 0x74: return 0x09;
    default: return 0;
  }
}

function isDigit(c: u8): bool {
  return c >= 0x30 && c <= 0x39;
}

export function hexValue(c: u8): i32 {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  const lower = c | 0x20;
  if (lower >= 0x61 && lower <= 0x66) return lower - 0x61 + 10;
  return -1;
}
