// The comparison record: one compact JSON object per request, written on the side that served it and
// on the shadow side, so scripts/shadow-report.ts can put the two answers to one request next to
// each other. The answer is never kept: only its hash, its length and its first few characters.
import { JsonObjectWriter } from "../json/writer";
import { UsageTracker } from "../llm/usage-tracker";
import { TokenizerFamily } from "../llm/tokens";
import { hex64, StableHasher } from "../text/stable-hash";

/** The usage tracker, also hashing the answer text and keeping its first `previewChars` characters. */
export class AnswerTracker extends UsageTracker {
  answerChars: i64 = 0;
  preview: string = "";
  private hasher: StableHasher = new StableHasher();

  constructor(stream: bool, public previewChars: i32) {
    super(stream, TokenizerFamily.O200K, true);
  }

  addText(cp: i32): void {
    super.addText(cp);
    this.hasher.addCodePoint(cp);
    this.answerChars++;
    if (this.answerChars <= <i64>this.previewChars) this.preview += String.fromCodePoint(cp);
  }

  get answerHash(): string {
    return hex64(this.hasher.digest());
  }
}

export class ComparisonRecord {
  requestId: string = "";
  /** The target that served the request, or "shadow". */
  side: string = "";
  /** The model the client asked for, and the one sent upstream when this side rewrote it. */
  model: string = "";
  upstreamModel: string = "";
  status: i64 = 0;
  latencyMs: i64 = 0;
  tracker: AnswerTracker | null = null;

  toJson(): string {
    const out = new JsonObjectWriter()
      .string("id", this.requestId)
      .string("side", this.side)
      .string("model", this.model);
    if (this.upstreamModel.length > 0 && this.upstreamModel != this.model) out.string("upstream_model", this.upstreamModel);
    out.int("status", this.status).int("latency_ms", this.latencyMs);
    const tracker = this.tracker;
    if (tracker == null) return out.toString();
    if (tracker.model.length > 0) out.string("response_model", tracker.model);
    if (tracker.promptTokens >= 0) out.int("prompt_tokens", tracker.promptTokens);
    out.int("completion_tokens", tracker.completionTokens)
      .string("usage", tracker.sawUsage ? "reported" : "estimated")
      .int("bytes", tracker.bytes)
      .string("answer_hash", tracker.answerHash)
      .int("answer_chars", tracker.answerChars)
      .string("preview", tracker.preview);
    return out.toString();
  }
}
