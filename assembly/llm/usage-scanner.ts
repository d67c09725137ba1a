// The JSON side of reading a model's answer: a streaming scanner over one JSON document (a body,
// or one SSE event's data) that reports to its UsageTracker what tells the answer's cost: `usage`
// objects, the model's name and the answer text; and why the model stopped (OpenAI's
// `finish_reason` per choice, Anthropic's `stop_reason`). It keeps only its nesting stack and the key it
// is reading, so a document split anywhere (inside a key, a number, a UTF-8 sequence or an escape)
// is read as in one piece.
//
// It is apart from the tracker because it knows JSON and the providers' field names, while the
// tracker knows chunks, time and token counting. Strings are passed over with one search for their
// end, and keys are matched in a static table where they lie, so most bytes cost one table load.
import { BACKSLASH, BARE, CR, findStop, LF, QUOTE, STOP_LINE, STOP_STRING, STOPS } from "./answer-bytes";
import { UsageTracker } from "./usage-tracker";

/** Nesting kept track of; deeper structure is skipped (no usage or answer text lives that deep). */
const MAX_DEPTH: i32 = 32;
const MAX_KEY_BYTES: i32 = 32;
const NUMBER_CAP: i64 = 1_000_000_000_000_000;

const OBJECT_VALUE: u8 = 1;
const ARRAY_VALUE: u8 = 2;

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
const K_FINISH: u8 = 11;

const KEY_NAMES: string[] = [
  "usage", "model", "message",
  "content", "text", "arguments", "partial_json", "thinking", "reasoning_content", "refusal",
  "prompt_tokens", "completion_tokens", "input_tokens", "output_tokens",
  "cache_creation_input_tokens", "cache_read_input_tokens",
  "finish_reason", "stop_reason",
];
const KEY_IDS: u8[] = [
  K_USAGE, K_MODEL, K_MESSAGE,
  K_TEXT, K_TEXT, K_TEXT, K_TEXT, K_TEXT, K_TEXT, K_TEXT,
  K_PROMPT_TOKENS, K_COMPLETION_TOKENS, K_INPUT_TOKENS, K_OUTPUT_TOKENS,
  K_CACHE_CREATION, K_CACHE_READ,
  K_FINISH, K_FINISH,
];

// The keys as fixed-size entries in static memory (id, then UTF-8 bytes), grouped by length, with
// where each length's group starts: matching the dozen keys of every streamed event then compares
// a key with at most three others and touches no array object.
const KEY_ENTRY: usize = MAX_KEY_BYTES + 1;
const KEY_SLOTS: i32 = 18;
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
const S_FINISH: u8 = 4;

const REPLACEMENT: i32 = 0xfffd;

/** Usage numbers of one `usage` object; -1 where the object has no such member. */
export class UsageNumbers {
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
export class UsageScanner {
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
          if (key != K_TEXT && key != K_FINISH && (key != K_MODEL || this.tracker.model.length > 0)) {
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
    // A name cut short is still the model's; a reason cut short says nothing.
    if (!this.inString) return;
    if (this.role == S_MODEL) this.tracker.endModel();
    else if (this.role == S_FINISH) this.tracker.dropValue();
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
    } else if (key == K_FINISH && this.usageDepth == 0) {
      this.role = S_FINISH;
    }
  }

  /**
   * String content from `start`: runs up to the next quote or backslash are taken whole (skipped,
   * copied into the key, or handed to the tracker as answer text); escapes, and the model name and
   * finish reasons, which are decoded into strings, go byte by byte. Returns where it stopped: after the closing
   * quote, at `end`, or at a line end (with `lines`).
   */
  private stringBytes(start: usize, end: usize, lines: bool): usize {
    let p = start;
    const role = this.role;
    const decoding = role == S_MODEL || role == S_FINISH || (role == S_TEXT && this.tracker.textByCodePoint);
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
    else if (this.role == S_FINISH) this.tracker.endFinishReason();
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
    else this.tracker.addValueChar(cp);
  }
}

function hexValue(c: i32): i32 {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  if (c >= 0x41 && c <= 0x46) return c - 0x41 + 10;
  return -1;
}
