// What a model's answer really cost, read from the response as it passes: the `usage` the provider
// reports (OpenAI `prompt_tokens`/`completion_tokens`, Anthropic `input_tokens`/`output_tokens`,
// in JSON bodies and in SSE streams), else the streamed answer text counted with the estimator.
//
// Nothing is buffered: bytes go through a streaming SSE line reader and a streaming JSON scanner
// that keeps only its nesting stack and the key it is reading, so a stream split anywhere (inside
// an event, a key, a number, a UTF-8 sequence or an escape) gives the same counts as one chunk.
import { TokenEstimator, TokenizerFamily } from "./tokens";

/** Nesting kept track of; deeper structure is skipped (no usage or answer text lives that deep). */
const MAX_DEPTH: i32 = 32;
const MAX_KEY_BYTES: i32 = 32;
const MAX_MODEL_CHARS: i32 = 128;
const NUMBER_CAP: i64 = 1_000_000_000_000_000;

const OBJECT: u8 = 1;
const ARRAY: u8 = 2;

// Keys the scanner acts on.
const K_OTHER: u8 = 0;
const K_USAGE: u8 = 1;
const K_MODEL: u8 = 2;
const K_MESSAGE: u8 = 3;
/** A string of answer text: content, text, tool-call arguments, thinking. */
const K_TEXT: u8 = 4;
const K_PROMPT_TOKENS: u8 = 5;
const K_COMPLETION_TOKENS: u8 = 6;
const K_INPUT_TOKENS: u8 = 7;
const K_OUTPUT_TOKENS: u8 = 8;
const K_CACHE_CREATION: u8 = 9;
const K_CACHE_READ: u8 = 10;

const KEY_NAMES: string[] = [
  "usage", "model", "message",
  "content", "text", "arguments", "partial_json", "thinking", "reasoning_content", "refusal",
  "prompt_tokens", "completion_tokens", "input_tokens", "output_tokens",
  "cache_creation_input_tokens", "cache_read_input_tokens",
];
const KEY_IDS: u8[] = [
  K_USAGE, K_MODEL, K_MESSAGE,
  K_TEXT, K_TEXT, K_TEXT, K_TEXT, K_TEXT, K_TEXT, K_TEXT,
  K_PROMPT_TOKENS, K_COMPLETION_TOKENS, K_INPUT_TOKENS, K_OUTPUT_TOKENS,
  K_CACHE_CREATION, K_CACHE_READ,
];
const KEY_BYTES: Uint8Array[] = keyBytes();

function keyBytes(): Uint8Array[] {
  const out = new Array<Uint8Array>(KEY_NAMES.length);
  for (let i = 0; i < KEY_NAMES.length; i++) out[i] = Uint8Array.wrap(String.UTF8.encode(KEY_NAMES[i]));
  return out;
}

// What the string being read is for.
const S_IGNORE: u8 = 0;
const S_KEY: u8 = 1;
const S_TEXT: u8 = 2;
const S_MODEL: u8 = 3;

const REPLACEMENT: i32 = 0xfffd;

/** Usage numbers of one `usage` object; -1 where the object has no such member. */
class UsageNumbers {
  prompt: i64 = -1;
  completion: i64 = -1;
  input: i64 = -1;
  output: i64 = -1;
  cacheCreation: i64 = -1;
  cacheRead: i64 = -1;

  clear(): void {
    this.prompt = -1;
    this.completion = -1;
    this.input = -1;
    this.output = -1;
    this.cacheCreation = -1;
    this.cacheRead = -1;
  }

  set(key: u8, value: i64): void {
    if (key == K_PROMPT_TOKENS) this.prompt = value;
    else if (key == K_COMPLETION_TOKENS) this.completion = value;
    else if (key == K_INPUT_TOKENS) this.input = value;
    else if (key == K_OUTPUT_TOKENS) this.output = value;
    else if (key == K_CACHE_CREATION) this.cacheCreation = value;
    else if (key == K_CACHE_READ) this.cacheRead = value;
  }

  /** All prompt-side tokens: Anthropic's input_tokens leaves out the cached parts, OpenAI's doesn't. */
  promptTotal(): i64 {
    if (this.prompt >= 0) return this.prompt;
    if (this.input < 0) return -1;
    return this.input + max<i64>(this.cacheCreation, 0) + max<i64>(this.cacheRead, 0);
  }

  completionTotal(): i64 {
    return this.completion >= 0 ? this.completion : this.output;
  }
}

/**
 * A streaming scanner over one JSON value that reports usage objects, the model name and answer
 * text to its tracker. Not a validator: on input that is not JSON it reports nothing useful but
 * never fails.
 */
class UsageScanner {
  private depth: i32 = 0;
  private containers: StaticArray<u8> = new StaticArray<u8>(MAX_DEPTH + 1);
  /** Per depth: the key of the object member being read. */
  private keys: StaticArray<u8> = new StaticArray<u8>(MAX_DEPTH + 1);
  private expectKey: bool = false;

  private inString: bool = false;
  private role: u8 = S_IGNORE;
  private escape: i32 = 0; // 0 none, 1 after '\', 2..5 reading the 4 hex digits of \u
  private hex: i32 = 0;
  private highSurrogate: i32 = 0;
  private utf8Need: i32 = 0;
  private utf8Cp: i32 = 0;
  private key: Uint8Array = new Uint8Array(MAX_KEY_BYTES);
  private keyLength: i32 = 0;
  private keyEscaped: bool = false;

  private inNumber: bool = false;
  private numberValid: bool = false;
  private number: i64 = 0;
  private numberKey: u8 = K_OTHER;

  /** Depth of the usage object being read (0: none) and whether it is the final count. */
  private usageDepth: i32 = 0;
  private usageFinal: bool = false;
  private usage: UsageNumbers = new UsageNumbers();

  constructor(private tracker: UsageTracker) {}

  reset(): void {
    this.depth = 0;
    this.expectKey = false;
    this.inString = false;
    this.escape = 0;
    this.highSurrogate = 0;
    this.utf8Need = 0;
    this.inNumber = false;
    this.usageDepth = 0;
  }

  feed(c: u8): void {
    if (this.inString) {
      this.stringByte(c);
      return;
    }
    if (this.inNumber) {
      if ((c >= 0x30 && c <= 0x39)) {
        if (this.number < NUMBER_CAP) this.number = this.number * 10 + <i64>(c - 0x30);
        return;
      }
      if (c == 0x2e || c == 0x65 || c == 0x45 || c == 0x2b || c == 0x2d) {
        this.numberValid = false;
        return;
      }
      this.endNumber();
    }
    switch (c) {
      case 0x7b: // {
        this.open(OBJECT);
        break;
      case 0x5b: // [
        this.open(ARRAY);
        break;
      case 0x7d: // }
      case 0x5d: // ]
        this.close();
        break;
      case 0x3a: // :
        this.expectKey = false;
        break;
      case 0x2c: // ,
        this.expectKey = this.inObject();
        break;
      case 0x22: // "
        this.startString();
        break;
      default:
        if (c == 0x2d || (c >= 0x30 && c <= 0x39)) this.startNumber(c);
    }
  }

  /** The bytes ended: a number still open may have been cut short, so it is dropped. */
  end(): void {
    this.inNumber = false;
  }

  private inObject(): bool {
    return this.depth > 0 && this.depth <= MAX_DEPTH && unchecked(this.containers[this.depth]) == OBJECT;
  }

  private keyAt(depth: i32): u8 {
    return depth > 0 && depth <= MAX_DEPTH && unchecked(this.containers[depth]) == OBJECT ? unchecked(this.keys[depth]) : K_OTHER;
  }

  private open(kind: u8): void {
    const parent = this.depth;
    this.depth++;
    this.expectKey = kind == OBJECT;
    if (this.depth > MAX_DEPTH) return;
    unchecked((this.containers[this.depth] = kind));
    unchecked((this.keys[this.depth] = K_OTHER));
    if (kind != OBJECT || this.keyAt(parent) != K_USAGE || this.usageDepth != 0) return;
    // The top-level `usage` is the final count (OpenAI bodies and last chunk, Anthropic message_delta);
    // `message.usage` is Anthropic's message_start, whose output count is only a placeholder.
    if (this.depth == 2) {
      this.startUsage(true);
    } else if (this.depth == 3 && this.keyAt(1) == K_MESSAGE) {
      this.startUsage(false);
    }
  }

  private startUsage(final: bool): void {
    this.usageDepth = this.depth;
    this.usageFinal = final;
    this.usage.clear();
  }

  private close(): void {
    if (this.depth == 0) return;
    if (this.usageDepth == this.depth) {
      this.tracker.reportUsage(this.usage, this.usageFinal);
      this.usageDepth = 0;
    }
    this.depth--;
    this.expectKey = false;
  }

  private startNumber(c: u8): void {
    if (this.usageDepth == 0 || this.depth != this.usageDepth) return;
    this.inNumber = true;
    this.numberValid = c != 0x2d;
    this.number = c == 0x2d ? 0 : <i64>(c - 0x30);
    this.numberKey = unchecked(this.keys[this.depth]);
  }

  private endNumber(): void {
    this.inNumber = false;
    if (this.numberValid) this.usage.set(this.numberKey, this.number);
  }

  private startString(): void {
    this.inString = true;
    this.escape = 0;
    this.highSurrogate = 0;
    this.utf8Need = 0;
    if (this.expectKey && this.inObject()) {
      this.role = S_KEY;
      this.keyLength = 0;
      this.keyEscaped = false;
      return;
    }
    this.role = S_IGNORE;
    const key = this.keyAt(this.depth);
    if (key == K_TEXT && this.depth >= 2 && this.usageDepth == 0) {
      this.role = S_TEXT;
    } else if (key == K_MODEL && this.tracker.model.length == 0 && (this.depth == 1 || (this.depth == 2 && this.keyAt(1) == K_MESSAGE))) {
      this.role = S_MODEL;
    }
  }

  private stringByte(c: u8): void {
    if (this.role == S_KEY || this.role == S_IGNORE) {
      if (this.escape != 0) {
        this.escape = 0;
        return;
      }
      if (c == 0x5c) {
        this.escape = 1;
        this.keyEscaped = true;
        return;
      }
      if (c == 0x22) {
        this.inString = false;
        if (this.role == S_KEY) this.endKey();
        return;
      }
      if (this.role == S_KEY) {
        if (this.keyLength < MAX_KEY_BYTES) unchecked((this.key[this.keyLength] = c));
        this.keyLength++;
      }
      return;
    }
    this.decodeByte(c);
  }

  private endKey(): void {
    let id = K_OTHER;
    if (!this.keyEscaped && this.keyLength <= MAX_KEY_BYTES) {
      for (let i = 0; i < KEY_BYTES.length; i++) {
        const name = unchecked(KEY_BYTES[i]);
        if (name.length != this.keyLength) continue;
        if (memory.compare(name.dataStart, this.key.dataStart, this.keyLength) == 0) {
          id = unchecked(KEY_IDS[i]);
          break;
        }
      }
    }
    if (this.depth <= MAX_DEPTH) unchecked((this.keys[this.depth] = id));
  }

  /** One byte of a string whose text matters: JSON escapes and UTF-8 decoded to code points. */
  private decodeByte(c: u8): void {
    if (this.escape == 1) {
      this.escape = 0;
      switch (c) {
        case 0x6e: this.emit(0x0a); return; // n
        case 0x74: this.emit(0x09); return; // t
        case 0x72: this.emit(0x0d); return; // r
        case 0x62: this.emit(0x08); return; // b
        case 0x66: this.emit(0x0c); return; // f
        case 0x75: // u
          this.escape = 2;
          this.hex = 0;
          return;
        default: this.emit(<i32>c); return; // " \ / and anything else taken literally
      }
    }
    if (this.escape >= 2) {
      const digit = hexValue(c);
      if (digit < 0) {
        this.escape = 0;
        this.emit(REPLACEMENT);
        if (c == 0x22) this.endTextString();
        return;
      }
      this.hex = (this.hex << 4) | digit;
      if (++this.escape == 6) {
        this.escape = 0;
        this.emitUtf16(this.hex);
      }
      return;
    }
    if (this.utf8Need > 0) {
      if ((c & 0xc0) == 0x80) {
        this.utf8Cp = (this.utf8Cp << 6) | (c & 0x3f);
        if (--this.utf8Need == 0) this.emit(this.utf8Cp);
        return;
      }
      this.utf8Need = 0;
      this.emit(REPLACEMENT);
    }
    if (c == 0x22) {
      this.endTextString();
      return;
    }
    if (c == 0x5c) {
      this.escape = 1;
      return;
    }
    if (c < 0x80) {
      this.emit(<i32>c);
    } else if (c >= 0xc2 && c <= 0xdf) {
      this.utf8Need = 1;
      this.utf8Cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
      this.utf8Need = 2;
      this.utf8Cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      this.utf8Need = 3;
      this.utf8Cp = c & 0x07;
    } else {
      this.emit(REPLACEMENT);
    }
  }

  private endTextString(): void {
    if (this.highSurrogate != 0) this.emitCodePoint(REPLACEMENT);
    this.highSurrogate = 0;
    this.inString = false;
  }

  private emitUtf16(unit: i32): void {
    if (unit >= 0xd800 && unit <= 0xdbff) {
      if (this.highSurrogate != 0) this.emitCodePoint(REPLACEMENT);
      this.highSurrogate = unit;
      return;
    }
    if (unit >= 0xdc00 && unit <= 0xdfff) {
      if (this.highSurrogate == 0) {
        this.emitCodePoint(REPLACEMENT);
        return;
      }
      const cp = 0x10000 + ((this.highSurrogate - 0xd800) << 10) + (unit - 0xdc00);
      this.highSurrogate = 0;
      this.emitCodePoint(cp);
      return;
    }
    this.emit(unit);
  }

  /** A decoded code point that is not the second half of a \u surrogate pair. */
  private emit(cp: i32): void {
    if (this.highSurrogate != 0) {
      this.highSurrogate = 0;
      this.emitCodePoint(REPLACEMENT);
    }
    this.emitCodePoint(cp);
  }

  private emitCodePoint(cp: i32): void {
    if (this.role == S_TEXT) this.tracker.addText(cp);
    else this.tracker.addModelChar(cp);
  }
}

function hexValue(c: u8): i32 {
  if (c >= 0x30 && c <= 0x39) return <i32>c - 0x30;
  if (c >= 0x61 && c <= 0x66) return <i32>c - 0x61 + 10;
  if (c >= 0x41 && c <= 0x46) return <i32>c - 0x41 + 10;
  return -1;
}

// SSE line reader states.
const L_FIELD: i32 = 0;
const L_DATA: i32 = 1;
const L_SKIP: i32 = 2;
const MAX_FIELD_BYTES: i32 = 8;

/**
 * Follows one response: call onChunk for each body chunk as it passes and finish() at the end
 * (or when the stream is cut). Counts are valid at any time; after finish() they are final.
 */
export class UsageTracker {
  /** Prompt tokens the response reported; -1 when it reported none. */
  promptTokens: i64 = -1;
  /** True when the completion count comes from the response's own usage, not from counting text. */
  sawUsage: bool = false;
  /** nowMs of the chunk that carried the first answer text; -1 while there was none. */
  firstContentAtMs: i64 = -1;
  /** The model the response names (first one seen); "" when it names none. */
  model: string = "";
  /** Body bytes seen. */
  bytes: i64 = 0;

  private reportedCompletion: i64 = 0;
  private estimator: TokenEstimator;
  private scanner!: UsageScanner;
  private chunkAt: i64 = 0;
  private finished: bool = false;

  private lineState: i32 = L_FIELD;
  private field: Uint8Array = new Uint8Array(MAX_FIELD_BYTES);
  private fieldLength: i32 = 0;
  private skipSpace: bool = false;
  private lastWasCR: bool = false;
  private eventHasData: bool = false;

  /**
   * `stream`: the body is a text/event-stream (see isEventStream); otherwise one JSON document.
   * `family`: the tokenizer family used to count answer text when the response reports no usage.
   */
  constructor(public stream: bool, family: TokenizerFamily = TokenizerFamily.O200K) {
    this.estimator = new TokenEstimator(family);
    this.scanner = new UsageScanner(this);
  }

  /** Completion tokens: the reported count, else the answer text seen so far, estimated. */
  get completionTokens(): i64 {
    return this.sawUsage ? this.reportedCompletion : <i64>this.estimator.tokens();
  }

  onChunk(bytes: Uint8Array, nowMs: i64): void {
    if (this.finished) return;
    this.chunkAt = nowMs;
    this.bytes += bytes.length;
    const scanner = this.scanner;
    if (!this.stream) {
      for (let i = 0; i < bytes.length; i++) scanner.feed(unchecked(bytes[i]));
      return;
    }
    for (let i = 0; i < bytes.length; i++) this.sseByte(unchecked(bytes[i]));
  }

  finish(): void {
    if (this.finished) return;
    this.finished = true;
    this.scanner.end();
  }

  /** Whether a response content-type announces an SSE stream. */
  static isEventStream(contentType: string | null): bool {
    if (contentType == null) return false;
    return contentType.trim().toLowerCase().startsWith("text/event-stream");
  }

  // ---- called by the scanner ----

  reportUsage(usage: UsageNumbers, final: bool): void {
    const prompt = usage.promptTotal();
    if (prompt >= 0) this.promptTokens = prompt;
    if (!final) return;
    const completion = usage.completionTotal();
    if (completion >= 0) {
      this.reportedCompletion = completion;
      this.sawUsage = true;
    }
  }

  addText(cp: i32): void {
    if (this.firstContentAtMs < 0) this.firstContentAtMs = this.chunkAt;
    this.estimator.addCodePoint(cp);
  }

  addModelChar(cp: i32): void {
    if (this.model.length < MAX_MODEL_CHARS) this.model += String.fromCodePoint(cp);
  }

  // ---- SSE framing ----

  private sseByte(c: u8): void {
    if (this.lastWasCR) {
      this.lastWasCR = false;
      if (c == 0x0a) return;
    }
    if (c == 0x0d || c == 0x0a) {
      this.lastWasCR = c == 0x0d;
      this.endLine();
      return;
    }
    if (this.lineState == L_DATA) {
      if (this.skipSpace) {
        this.skipSpace = false;
        if (c == 0x20) return;
      }
      this.scanner.feed(c);
      return;
    }
    if (this.lineState == L_SKIP) return;
    if (c == 0x3a) {
      this.startValue();
      return;
    }
    if (this.fieldLength < MAX_FIELD_BYTES) unchecked((this.field[this.fieldLength] = c));
    this.fieldLength++;
  }

  private isDataField(): bool {
    const f = this.field;
    return this.fieldLength == 4 && unchecked(f[0]) == 0x64 && unchecked(f[1]) == 0x61 && unchecked(f[2]) == 0x74 && unchecked(f[3]) == 0x61;
  }

  /** After "field:": a data line's value goes to the scanner; anything else is skipped. */
  private startValue(): void {
    if (!this.isDataField()) {
      this.lineState = L_SKIP;
      return;
    }
    this.lineState = L_DATA;
    this.skipSpace = true;
    this.startDataLine();
  }

  private startDataLine(): void {
    // Data lines of one event are joined by a newline; inside JSON that is whitespace.
    if (this.eventHasData) this.scanner.feed(0x0a);
    this.eventHasData = true;
  }

  private endLine(): void {
    if (this.lineState == L_FIELD) {
      if (this.fieldLength == 0) {
        this.dispatch();
      } else if (this.isDataField()) {
        this.startDataLine();
      }
    }
    this.lineState = L_FIELD;
    this.fieldLength = 0;
  }

  /** A blank line ends the event; the next one is a new JSON document. */
  private dispatch(): void {
    if (!this.eventHasData) return;
    this.eventHasData = false;
    this.scanner.end();
    this.scanner.reset();
  }
}
