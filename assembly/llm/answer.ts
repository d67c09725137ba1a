// What a model's answer really cost, read from the response as it passes: the `usage` the provider
// reports (OpenAI `prompt_tokens`/`completion_tokens`, Anthropic `input_tokens`/`output_tokens`,
// in JSON bodies and in SSE streams), else the streamed answer text counted with the estimator.
//
// Nothing is buffered: bytes go through a streaming SSE line reader and a streaming JSON scanner
// that keeps only its nesting stack and the key it is reading, so a stream split anywhere (inside
// an event, a key, a number, a UTF-8 sequence or an escape) gives the same counts as one chunk.
//
// Every response byte passes through here, so the bytes are read straight from linear memory in
// tight loops: the line reader looks for line ends, the scanner skips string contents up to the next
// quote or backslash, and answer text reaches the estimator as whole UTF-8 runs, never a call per
// byte. Estimating is deferred to the end of each chunk and skipped once the response has reported
// its final usage: a chunk that carries the usage (a JSON body, or a stream Envoy hands over in one
// piece) costs no estimating at all, while a stream cut before its usage still has all its text
// counted, chunk by chunk.
import { TokenEstimator, TokenizerFamily } from "./tokens";
import { asciiLower } from "../text/ascii";

/** Nesting kept track of; deeper structure is skipped (no usage or answer text lives that deep). */
const MAX_DEPTH: i32 = 32;
const MAX_KEY_BYTES: i32 = 32;
const MAX_MODEL_CHARS: i32 = 128;
const NUMBER_CAP: i64 = 1_000_000_000_000_000;

const OBJECT_VALUE: u8 = 1;
const ARRAY_VALUE: u8 = 2;

const LF: i32 = 0x0a;
const CR: i32 = 0x0d;
const QUOTE: i32 = 0x22;
const BACKSLASH: i32 = 0x5c;

// Byte classes: bit 1 quote and backslash (the end of a run of string content), bit 2 line ends
// (which end an SSE data line even inside a string), bit 4 the letters, digits and signs of
// literals and numbers (a run of them outside a usage object is skipped whole).
const STOP_STRING: u8 = 1;
const STOP_LINE: u8 = 2;
const BARE: u8 = 4;
const STOPS: usize = stopTable();

function stopTable(): usize {
  const table = memory.data(256);
  store<u8>(table + QUOTE, STOP_STRING);
  store<u8>(table + BACKSLASH, STOP_STRING);
  store<u8>(table + LF, STOP_LINE);
  store<u8>(table + CR, STOP_LINE);
  for (let c = 0x30; c <= 0x39; c++) store<u8>(table + <usize>c, BARE);
  for (let c = 0x61; c <= 0x7a; c++) store<u8>(table + <usize>c, BARE);
  for (let c = 0x41; c <= 0x5a; c++) store<u8>(table + <usize>c, BARE);
  store<u8>(table + 0x2b, BARE);
  store<u8>(table + 0x2d, BARE);
  store<u8>(table + 0x2e, BARE);
  return table;
}

/** The first byte at or after `p` (before `end`) that is in `stops`; `end` when there is none. */
@inline function findStop(p: usize, end: usize, stops: u8): usize {
  while (p < end && (load<u8>(STOPS + <usize>load<u8>(p)) & stops) == 0) p++;
  return p;
}

/** One newline, fed to the scanner where an event's data lines join. */
const NEWLINE: usize = memory.data<u8>([0x0a]);

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

// The keys as fixed-size entries in static memory (id, then UTF-8 bytes), grouped by length, with
// where each length's group starts: matching the dozen keys of every streamed event then compares
// a key with at most three others and touches no array object.
const KEY_ENTRY: usize = MAX_KEY_BYTES + 1;
const KEY_SLOTS: i32 = 16;
/** Per length 0..MAX_KEY_BYTES: index of the first entry of that length, and past the last. */
const KEY_GROUPS: usize = memory.data((MAX_KEY_BYTES + 1) * 2);
const KEY_TABLE: usize = keyTable();

function keyTable(): usize {
  const table = memory.data((MAX_KEY_BYTES + 1) * KEY_SLOTS);
  const names = new Array<ArrayBuffer>(KEY_NAMES.length);
  for (let i = 0; i < KEY_NAMES.length; i++) names[i] = String.UTF8.encode(KEY_NAMES[i]);
  let count = 0;
  for (let length = 1; length <= MAX_KEY_BYTES; length++) {
    store<u8>(KEY_GROUPS + (<usize>length << 1), <u8>count);
    for (let i = 0; i < names.length && count < KEY_SLOTS; i++) {
      const name = names[i];
      if (name.byteLength != length) continue;
      const entry = table + <usize>count * KEY_ENTRY;
      store<u8>(entry, KEY_IDS[i]);
      memory.copy(entry + 1, changetype<usize>(name), <usize>length);
      count++;
    }
    store<u8>(KEY_GROUPS + (<usize>length << 1), <u8>count, 1);
  }
  return table;
}

/** The id of the key of `length` bytes (1..MAX_KEY_BYTES) at `ptr`; K_OTHER for keys not acted on. */
function keyId(ptr: usize, length: i32): u8 {
  const group = KEY_GROUPS + (<usize>length << 1);
  const last = <i32>load<u8>(group, 1);
  const first = load<u8>(ptr);
  for (let i = <i32>load<u8>(group); i < last; i++) {
    const entry = KEY_TABLE + <usize>i * KEY_ENTRY;
    if (load<u8>(entry, 1) == first && memory.compare(entry + 1, ptr, <usize>length) == 0) return load<u8>(entry);
  }
  return K_OTHER;
}

// What the string being read is for.
const S_IGNORE: u8 = 0;
const S_KEY: u8 = 1;
const S_TEXT: u8 = 2;
const S_MODEL: u8 = 3;

const REPLACEMENT: i32 = 0xfffd;

/** Length of the UTF-8 sequence a byte starts, for the lead bytes the estimator accepts; 0 otherwise. */
@inline function sequenceLength(lead: i32): i32 {
  if (lead >= 0xc2 && lead <= 0xdf) return 2;
  if (lead >= 0xe0 && lead <= 0xef) return 3;
  if (lead >= 0xf0 && lead <= 0xf4) return 4;
  return 0;
}

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
  /** A key read in pieces (across chunks or lines, or with escapes), as far as it fits. */
  private key: StaticArray<u8> = new StaticArray<u8>(MAX_KEY_BYTES);
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

  /**
   * Scans the bytes from `start` to `end`. With `lines` (an SSE data line) it stops before a CR or
   * LF and returns where; otherwise it returns `end`.
   */
  scan(start: usize, end: usize, lines: bool): usize {
    let p = start;
    while (p < end) {
      if (this.inString) {
        p = this.stringBytes(p, end, lines);
        if (this.inString) return p;
        continue;
      }
      const c = <i32>load<u8>(p);
      if (this.inNumber) {
        if (<u32>(c - 0x30) <= 9) {
          if (this.number < NUMBER_CAP) this.number = this.number * 10 + <i64>(c - 0x30);
          p++;
          continue;
        }
        if (c == 0x2e || c == 0x65 || c == 0x45 || c == 0x2b || c == 0x2d) {
          this.numberValid = false;
          p++;
          continue;
        }
        // A number may go on after the line break, on the event's next data line.
        if (lines && (c == LF || c == CR)) return p;
        this.endNumber();
      }
      switch (c) {
        case 0x7b: // {
          this.open(OBJECT_VALUE);
          break;
        case 0x5b: // [
          this.open(ARRAY_VALUE);
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
        case QUOTE: {
          // Most strings are keys, and values passed over, that lie whole in the chunk: those take
          // a single search for their closing quote, and a key is matched where it lies.
          const isKey = this.expectKey && this.inObject();
          const key = isKey ? K_OTHER : this.keyAt(this.depth);
          if (key != K_TEXT && (key != K_MODEL || this.tracker.model.length > 0)) {
            const from = p + 1;
            const stop = findStop(from, end, lines ? STOP_STRING | STOP_LINE : STOP_STRING);
            if (stop < end && load<u8>(stop) == QUOTE) {
              if (isKey) this.setKey(from, <i32>(stop - from));
              p = stop + 1;
              continue;
            }
          }
          this.startString();
          break;
        }
        case LF:
        case CR:
          if (lines) return p;
          break;
        default:
          // Only numbers directly in a usage object matter; other literals are passed over whole.
          if (this.usageDepth == this.depth && this.usageDepth != 0 && (c == 0x2d || <u32>(c - 0x30) <= 9)) {
            this.startNumber(c);
          } else {
            while (p + 1 < end && (load<u8>(STOPS + <usize>load<u8>(p + 1)) & BARE) != 0) p++;
          }
      }
      p++;
    }
    return p;
  }

  /** The bytes ended: a number still open may have been cut short, so it is dropped. */
  end(): void {
    this.inNumber = false;
  }

  @inline private inObject(): bool {
    return this.depth > 0 && this.depth <= MAX_DEPTH && unchecked(this.containers[this.depth]) == OBJECT_VALUE;
  }

  @inline private keyAt(depth: i32): u8 {
    return depth > 0 && depth <= MAX_DEPTH && unchecked(this.containers[depth]) == OBJECT_VALUE ? unchecked(this.keys[depth]) : K_OTHER;
  }

  private open(kind: u8): void {
    const parent = this.depth;
    this.depth++;
    this.expectKey = kind == OBJECT_VALUE;
    if (this.depth > MAX_DEPTH) return;
    unchecked((this.containers[this.depth] = kind));
    unchecked((this.keys[this.depth] = K_OTHER));
    if (kind != OBJECT_VALUE || this.keyAt(parent) != K_USAGE || this.usageDepth != 0) return;
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

  private startNumber(c: i32): void {
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

  /**
   * String content from `start`: runs up to the next quote or backslash are taken whole (skipped,
   * copied into the key, or handed to the tracker as answer text); escapes, and the model name,
   * which is decoded into a string, go byte by byte. Returns where it stopped: after the closing
   * quote, at `end`, or at a line end (with `lines`).
   */
  private stringBytes(start: usize, end: usize, lines: bool): usize {
    let p = start;
    const role = this.role;
    const decoding = role == S_MODEL || (role == S_TEXT && this.tracker.textByCodePoint);
    while (p < end) {
      if (this.escape != 0 || decoding) {
        const c = <i32>load<u8>(p);
        if (lines && (c == LF || c == CR)) return p;
        p++;
        if (role == S_IGNORE || role == S_KEY) {
          this.escape = 0;
          continue;
        }
        this.decodeByte(c);
        if (!this.inString) return p;
        continue;
      }
      const stop = findStop(p, end, lines ? STOP_STRING | STOP_LINE : STOP_STRING);
      const c = stop < end ? <i32>load<u8>(stop) : 0;
      if (role == S_TEXT) {
        if (stop > p && this.highSurrogate != 0) {
          // A \u high surrogate followed by anything but its low half stands alone.
          this.highSurrogate = 0;
          this.emitCodePoint(REPLACEMENT);
        }
        this.tracker.addTextRun(p, stop, stop == end);
      } else if (role == S_KEY) {
        this.addKeyBytes(p, stop);
      }
      if (stop == end) return end;
      if (c == QUOTE) {
        this.inString = false;
        if (role == S_KEY) this.endKey();
        else if (role == S_TEXT) this.endTextString();
        return stop + 1;
      }
      if (c != BACKSLASH) return stop;
      this.escape = 1;
      if (role == S_KEY) this.keyEscaped = true;
      p = stop + 1;
    }
    return p;
  }

  private addKeyBytes(from: usize, to: usize): void {
    const length = <i32>(to - from);
    const buffer = changetype<usize>(this.key);
    const room = min(length, MAX_KEY_BYTES - this.keyLength);
    for (let i = 0; i < room; i++) store<u8>(buffer + <usize>(this.keyLength + i), load<u8>(from + <usize>i));
    this.keyLength += length;
  }

  private endKey(): void {
    if (this.keyEscaped) this.setKey(0, 0);
    else this.setKey(changetype<usize>(this.key), this.keyLength);
  }

  /** The key of the member being read: `length` bytes at `ptr`. */
  private setKey(ptr: usize, length: i32): void {
    const id = length > 0 && length <= MAX_KEY_BYTES ? keyId(ptr, length) : K_OTHER;
    if (this.depth <= MAX_DEPTH) unchecked((this.keys[this.depth] = id));
  }

  /** One byte of a string whose text matters: JSON escapes and UTF-8 decoded to code points. */
  private decodeByte(c: i32): void {
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
        default: this.emit(c); return; // " \ / and anything else taken literally
      }
    }
    if (this.escape >= 2) {
      const digit = hexValue(c);
      if (digit < 0) {
        this.escape = 0;
        this.emit(REPLACEMENT);
        if (c == QUOTE) this.endTextString();
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
    if (c == QUOTE) {
      this.endTextString();
      return;
    }
    if (c == BACKSLASH) {
      this.escape = 1;
      return;
    }
    if (c < 0x80) {
      this.emit(c);
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
    if (this.role == S_MODEL) this.tracker.endModel();
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
    if (this.role == S_TEXT) this.tracker.addTextCodePoint(cp);
    else this.tracker.addModelChar(cp);
  }
}

function hexValue(c: i32): i32 {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  if (c >= 0x41 && c <= 0x46) return c - 0x41 + 10;
  return -1;
}

/** Pieces of text kept for the end of a chunk at most; a chunk of more is estimated as it goes. */
const MAX_PENDING: i32 = 1024;

/**
 * Answer text waiting for the end of its chunk, in order: UTF-8 runs (where they lie in memory and
 * how long) and decoded code points (from escapes). The runs point into the chunk, which lives as
 * long as the call that scans it.
 */
class PendingText {
  private entries: StaticArray<i32> = new StaticArray<i32>(0);
  private count: i32 = 0;

  get isEmpty(): bool {
    return this.count == 0;
  }

  get isFull(): bool {
    return this.count >= MAX_PENDING;
  }

  addRun(ptr: usize, length: i32): void {
    this.add(<i32>ptr, length);
  }

  addCodePoint(cp: i32): void {
    this.add(cp, -1);
  }

  feed(estimator: TokenEstimator): void {
    const base = changetype<usize>(this.entries);
    for (let i = 0; i < this.count; i++) {
      const at = base + (<usize>i << 3);
      const length = load<i32>(at, 4);
      if (length < 0) estimator.addCodePoint(load<i32>(at));
      else estimator.addUtf8At(<usize>load<u32>(at), length);
    }
    this.count = 0;
  }

  clear(): void {
    this.count = 0;
  }

  private add(first: i32, second: i32): void {
    const used = this.count << 1;
    if (used == this.entries.length) {
      const grown = new StaticArray<i32>(max(used << 1, 64));
      memory.copy(changetype<usize>(grown), changetype<usize>(this.entries), <usize>used << 2);
      this.entries = grown;
    }
    unchecked((this.entries[used] = first));
    unchecked((this.entries[used + 1] = second));
    this.count++;
  }
}

// SSE line reader states.
const L_FIELD: i32 = 0;
const L_DATA: i32 = 1;
const L_SKIP: i32 = 2;
const MAX_FIELD_BYTES: i32 = 8;

/**
 * Follows one response: call onChunk for each body chunk as it passes and finish() at the end
 * (or when the stream is cut). Counts are valid between chunks; after finish() they are final.
 *
 * Answer text reaches `addTextRun` as UTF-8 runs. A subclass that overrides `addText`, and says so
 * to the constructor, gets every code point instead, estimated at once (the router's AnswerTracker
 * hashes the answer that way).
 */
export class UsageTracker {
  /** Prompt tokens the response reported; -1 when it reported none. */
  promptTokens: i64 = -1;
  /** True when the completion count comes from the response's own usage, not from counting text. */
  sawUsage: bool = false;
  /** nowMs of the chunk that carried the first answer text; -1 while there was none. */
  firstContentAtMs: i64 = -1;
  /** nowMs of the last chunk that carried answer text; -1 while there was none. */
  lastContentAtMs: i64 = -1;
  /** The model the response names (first one seen); "" when it names none. */
  model: string = "";
  /** Body bytes seen. */
  bytes: i64 = 0;
  /** Whether answer text is decoded and handed to addText code point by code point. */
  readonly textByCodePoint: bool;

  private reportedCompletion: i64 = 0;
  private readonly tokenizer: TokenizerFamily;
  /** Made when there is first text to count: an answer that reports its usage never needs one. */
  private estimator: TokenEstimator | null = null;
  private scanner!: UsageScanner;
  /** The model name as it is decoded, in UTF-16 units; it becomes `model` when its string ends. */
  private modelUnits: StaticArray<u16> = new StaticArray<u16>(0);
  private modelLength: i32 = 0;
  private chunkAt: i64 = 0;
  private finished: bool = false;

  private pending: PendingText = new PendingText();
  /**
   * A UTF-8 sequence the previous chunk ended inside (at most 3 bytes of it), completed by the next
   * chunk's first bytes; `tail` is the start of such a sequence at the end of the current chunk.
   */
  private head: StaticArray<u8> = new StaticArray<u8>(4);
  private headLength: i32 = 0;
  private tail: usize = 0;
  private tailLength: i32 = 0;

  private lineState: i32 = L_FIELD;
  private field: StaticArray<u8> = new StaticArray<u8>(MAX_FIELD_BYTES);
  private fieldLength: i32 = 0;
  private skipSpace: bool = false;
  private lastWasCR: bool = false;
  private eventHasData: bool = false;

  /**
   * `stream`: the body is a text/event-stream (see isEventStream); otherwise one JSON document.
   * `family`: the tokenizer family used to count answer text when the response reports no usage.
   * `textByCodePoint`: true from a subclass that overrides addText and so needs every code point.
   */
  constructor(public stream: bool, family: TokenizerFamily = TokenizerFamily.O200K, textByCodePoint: bool = false) {
    this.tokenizer = family;
    this.scanner = new UsageScanner(this);
    this.textByCodePoint = textByCodePoint;
  }

  /** The tokenizer family answer text is estimated with. */
  get family(): TokenizerFamily {
    return this.tokenizer;
  }

  /** Completion tokens: the reported count, else the answer text seen so far, estimated. */
  get completionTokens(): i64 {
    if (this.sawUsage) return this.reportedCompletion;
    const estimator = this.estimator;
    return estimator != null ? <i64>estimator.tokens() : 0;
  }

  onChunk(bytes: Uint8Array, nowMs: i64): void {
    this.onChunkAt(bytes.dataStart, bytes.length, nowMs);
  }

  /** The same over `length` bytes at `ptr` in linear memory; the caller vouches for the range. */
  onChunkAt(ptr: usize, length: i32, nowMs: i64): void {
    if (this.finished || length <= 0) return;
    this.chunkAt = nowMs;
    this.bytes += length;
    const end = ptr + <usize>length;
    if (this.stream) this.readLines(ptr, end);
    else this.scanner.scan(ptr, end, false);
    this.endChunk();
  }

  finish(): void {
    if (this.finished) return;
    this.finished = true;
    this.scanner.end();
    this.endModel();
    this.closeText();
    this.endChunk();
  }

  /** Whether a response content-type announces an SSE stream. */
  static isEventStream(contentType: string | null): bool {
    if (contentType == null) return false;
    return asciiLower(contentType.trim()).startsWith("text/event-stream");
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

  /** One code point of answer text, when text goes code point by code point (see textByCodePoint). */
  addText(cp: i32): void {
    this.sawContent();
    this.counter().addCodePoint(cp);
  }

  /**
   * Answer text from `from` to `to`, raw UTF-8. `open`: the run reached the end of the chunk inside
   * its string, so a sequence cut there is completed by the next chunk; otherwise the run is whole.
   */
  addTextRun(from: usize, to: usize, open: bool): void {
    if (to > from) this.sawContent();
    if (this.sawUsage) return;
    let start = from;
    let stop = to;
    if (this.headLength > 0) start = this.completeHead(start, stop, open);
    if (open) stop = this.holdTail(start, stop);
    if (stop > start) this.keepRun(start, <i32>(stop - start));
  }

  /** A code point of answer text from an escape. */
  addTextCodePoint(cp: i32): void {
    if (this.textByCodePoint) {
      this.addText(cp);
      return;
    }
    this.sawContent();
    if (this.sawUsage) return;
    this.pending.addCodePoint(cp);
    if (this.pending.isFull) this.pending.feed(this.counter());
  }

  addModelChar(cp: i32): void {
    const length = this.modelLength;
    if (length >= MAX_MODEL_CHARS) return;
    if (this.modelUnits.length == 0) this.modelUnits = new StaticArray<u16>(MAX_MODEL_CHARS + 1);
    const units = this.modelUnits;
    if (cp < 0x10000) {
      unchecked((units[length] = <u16>cp));
      this.modelLength = length + 1;
      return;
    }
    unchecked((units[length] = <u16>(0xd7c0 + (cp >> 10))));
    unchecked((units[length + 1] = <u16>(0xdc00 + (cp & 0x3ff))));
    this.modelLength = length + 2;
  }

  /** The model's string ended (or the body did, inside it). */
  endModel(): void {
    if (this.modelLength == 0) return;
    this.model = String.UTF16.decodeUnsafe(changetype<usize>(this.modelUnits), <usize>this.modelLength << 1);
    this.modelLength = 0;
  }

  // ---- answer text ----

  private counter(): TokenEstimator {
    let estimator = this.estimator;
    if (estimator == null) this.estimator = estimator = new TokenEstimator(this.tokenizer);
    return estimator;
  }

  private sawContent(): void {
    if (this.firstContentAtMs < 0) this.firstContentAtMs = this.chunkAt;
    this.lastContentAtMs = this.chunkAt;
  }

  /**
   * Adds the continuation bytes at the start of a run to the sequence the last chunk ended in.
   * Anything else cuts the sequence short: the estimator then counts its bytes as invalid, as it
   * would have in one piece.
   */
  private completeHead(from: usize, to: usize, open: bool): usize {
    const head = changetype<usize>(this.head);
    const need = sequenceLength(<i32>load<u8>(head));
    let p = from;
    while (this.headLength < need && p < to && (load<u8>(p) & 0xc0) == 0x80) {
      store<u8>(head + <usize>this.headLength, load<u8>(p));
      this.headLength++;
      p++;
    }
    if (this.headLength < need && p == to && open) return p;
    this.keepRun(head, this.headLength);
    this.headLength = 0;
    return p;
  }

  /** Where a UTF-8 sequence cut by the end of the chunk starts, noted to be kept for the next one. */
  private holdTail(from: usize, to: usize): usize {
    for (let back = 1; back <= 3 && to - <usize>back >= from; back++) {
      const b = <i32>load<u8>(to - <usize>back);
      if ((b & 0xc0) == 0x80) continue;
      if (sequenceLength(b) > back) {
        this.tail = to - <usize>back;
        this.tailLength = back;
        return this.tail;
      }
      break;
    }
    return to;
  }

  /** The text run ended before the sequence the last chunk cut was completed. */
  private closeText(): void {
    if (this.headLength == 0) return;
    if (!this.sawUsage) this.keepRun(changetype<usize>(this.head), this.headLength);
    this.headLength = 0;
  }

  private keepRun(ptr: usize, length: i32): void {
    this.pending.addRun(ptr, length);
    if (this.pending.isFull) this.pending.feed(this.counter());
  }

  /** Estimates the chunk's text unless the response has reported its final usage by now. */
  private endChunk(): void {
    if (this.sawUsage) {
      this.pending.clear();
      this.headLength = 0;
      this.tailLength = 0;
      return;
    }
    if (!this.pending.isEmpty) this.pending.feed(this.counter());
    if (this.tailLength > 0) {
      memory.copy(changetype<usize>(this.head), this.tail, <usize>this.tailLength);
      this.headLength = this.tailLength;
      this.tailLength = 0;
    }
  }

  // ---- SSE framing ----

  /** SSE lines: `data:` values go to the scanner, other fields are skipped, blank lines end events. */
  private readLines(start: usize, end: usize): void {
    let p = start;
    while (p < end) {
      let c = <i32>load<u8>(p);
      if (this.lastWasCR) {
        this.lastWasCR = false;
        if (c == LF) {
          p++;
          continue;
        }
      }
      const state = this.lineState;
      if (state == L_DATA) {
        if (this.skipSpace) {
          this.skipSpace = false;
          if (c == 0x20) {
            p++;
            continue;
          }
        }
        p = this.scanner.scan(p, end, true);
      } else if (state == L_SKIP) {
        p = findStop(p, end, STOP_LINE);
      } else {
        p = this.readField(p, end);
        if (p < end && load<u8>(p) == 0x3a) {
          this.startValue();
          p++;
          continue;
        }
      }
      if (p == end) return;
      c = <i32>load<u8>(p);
      this.lastWasCR = c == CR;
      this.endLine();
      p++;
    }
  }

  /** A field name up to its colon or the line end; returns where it stopped. */
  private readField(start: usize, end: usize): usize {
    let p = start;
    while (p < end) {
      const c = <i32>load<u8>(p);
      if (c == 0x3a || c == LF || c == CR) break;
      if (this.fieldLength < MAX_FIELD_BYTES) unchecked((this.field[this.fieldLength] = <u8>c));
      this.fieldLength++;
      p++;
    }
    return p;
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
    if (this.eventHasData) this.scanner.scan(NEWLINE, NEWLINE + 1, false);
    this.eventHasData = true;
  }

  private endLine(): void {
    // Text cut at a chunk's end just before the line break does not go on across it.
    this.closeText();
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
