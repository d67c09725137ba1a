// What a model's answer really cost, read from the response as it passes: the `usage` the provider
// reports (OpenAI `prompt_tokens`/`completion_tokens`, Anthropic `input_tokens`/`output_tokens`,
// in JSON bodies and in SSE streams), else the streamed answer text counted with the estimator.
//
// Nothing is buffered: a stream's bytes go through the SSE line reader (sse-lines.ts), and a JSON
// body or each event's data through the streaming JSON scanner (usage-scanner.ts). This tracker
// ties the two together and keeps what outlives a chunk: the counts, when text came, and a UTF-8
// sequence a chunk ended inside, so a stream split anywhere (inside an event, a key, a number, a
// UTF-8 sequence or an escape) gives the same counts as one chunk.
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
import { SseLines } from "./sse-lines";
import { UsageNumbers, UsageScanner } from "./usage-scanner";

/** UTF-16 units kept of a string value the scanner decodes (the model's name, a finish reason). */
const MAX_VALUE_CHARS: i32 = 128;
/** Finish reasons kept: one per choice, and a client rarely asks for more choices than this. */
const MAX_FINISH_REASONS: i32 = 8;

/** One newline, fed to the scanner where an event's data lines join (whitespace, to JSON). */
const NEWLINE: usize = memory.data<u8>([0x0a]);

/** Length of the UTF-8 sequence a byte starts, for the lead bytes the estimator accepts; 0 otherwise. */
@inline function sequenceLength(lead: i32): i32 {
  if (lead >= 0xc2 && lead <= 0xdf) return 2;
  if (lead >= 0xe0 && lead <= 0xef) return 3;
  if (lead >= 0xf0 && lead <= 0xf4) return 4;
  return 0;
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
  /**
   * Why the model stopped, as the response says: each choice's reason in order ("stop", "length",
   * "end_turn"...), comma-separated; "" when it says none.
   */
  finishReasons: string = "";
  private finishCount: i32 = 0;
  /** Body bytes seen. */
  bytes: i64 = 0;
  /** Whether answer text is decoded and handed to addText code point by code point. */
  readonly textByCodePoint: bool;

  private reportedCompletion: i64 = 0;
  private readonly tokenizer: TokenizerFamily;
  /** Made when there is first text to count: an answer that reports its usage never needs one. */
  private estimator: TokenEstimator | null = null;
  private scanner!: UsageScanner;
  /** The string value being decoded (see MAX_VALUE_CHARS), in UTF-16 units, until its string ends. */
  private valueUnits: StaticArray<u16> = new StaticArray<u16>(0);
  private valueLength: i32 = 0;
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
  /** The stream's line reader; null for a JSON body, which goes to the scanner whole. */
  private lines: SseLines | null = null;

  /**
   * `stream`: the body is a text/event-stream (see isEventStream); otherwise one JSON document.
   * `family`: the tokenizer family used to count answer text when the response reports no usage.
   * `textByCodePoint`: true from a subclass that overrides addText and so needs every code point.
   */
  constructor(stream: bool, family: TokenizerFamily = TokenizerFamily.O200K, textByCodePoint: bool = false) {
    this.tokenizer = family;
    this.scanner = new UsageScanner(this);
    if (stream) this.lines = new SseLines(this);
    this.textByCodePoint = textByCodePoint;
  }

  /** Whether the body is read as an SSE stream. */
  get stream(): bool {
    return this.lines != null;
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
    const lines = this.lines;
    if (lines != null) lines.read(ptr, end);
    else this.scanner.scan(ptr, end, false);
    this.endChunk();
  }

  finish(): void {
    if (this.finished) return;
    this.finished = true;
    this.scanner.end();
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

  /** A code point of the string value being decoded: the model's name or a finish reason. */
  addValueChar(cp: i32): void {
    const length = this.valueLength;
    if (length >= MAX_VALUE_CHARS) return;
    if (this.valueUnits.length == 0) this.valueUnits = new StaticArray<u16>(MAX_VALUE_CHARS + 1);
    const units = this.valueUnits;
    if (cp < 0x10000) {
      unchecked((units[length] = <u16>cp));
      this.valueLength = length + 1;
      return;
    }
    unchecked((units[length] = <u16>(0xd7c0 + (cp >> 10))));
    unchecked((units[length + 1] = <u16>(0xdc00 + (cp & 0x3ff))));
    this.valueLength = length + 2;
  }

  /** The model's string ended (or the document did, inside it). */
  endModel(): void {
    const model = this.takeValue();
    if (model.length > 0) this.model = model;
  }

  /** A finish reason's string ended. */
  endFinishReason(): void {
    const reason = this.takeValue();
    if (reason.length == 0 || this.finishCount >= MAX_FINISH_REASONS) return;
    this.finishReasons = this.finishCount == 0 ? reason : this.finishReasons + "," + reason;
    this.finishCount++;
  }

  /** The document ended inside the value: it is not kept. */
  dropValue(): void {
    this.valueLength = 0;
  }

  private takeValue(): string {
    const length = this.valueLength;
    if (length == 0) return "";
    this.valueLength = 0;
    return String.UTF16.decodeUnsafe(changetype<usize>(this.valueUnits), <usize>length << 1);
  }

  // ---- called by the line reader ----

  /** A data value from `start`, read up to its line end; returns where it stopped (`end` at most). */
  @inline dataValue(start: usize, end: usize): usize {
    return this.scanner.scan(start, end, true);
  }

  /** Another data line of the event follows the last one. */
  @inline dataLineBreak(): void {
    this.scanner.scan(NEWLINE, NEWLINE + 1, false);
  }

  /** Text cut at a chunk's end just before a line break does not go on across it. */
  @inline lineEnded(): void {
    this.closeText();
  }

  /** A blank line ended an event that had data; the next data is a new JSON document. */
  @inline eventEnded(): void {
    this.scanner.end();
    this.scanner.reset();
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
}
