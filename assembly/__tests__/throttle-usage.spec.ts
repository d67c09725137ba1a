import { UsageTracker } from "../llm/usage-tracker";
import { TokenEstimator, TokenizerFamily } from "../llm/tokens";

function bytes(text: string): Uint8Array {
  return Uint8Array.wrap(String.UTF8.encode(text));
}

function track(stream: bool, text: string): UsageTracker {
  const tracker = new UsageTracker(stream);
  tracker.onChunk(bytes(text), 100);
  tracker.finish();
  return tracker;
}

/** The same body fed in pieces of `size` bytes, each with its own time. */
function trackInPieces(stream: bool, text: string, size: i32): UsageTracker {
  const all = bytes(text);
  const tracker = new UsageTracker(stream);
  for (let start = 0; start < all.length; start += size) {
    tracker.onChunk(all.subarray(start, min(all.length, start + size)), <i64>start);
  }
  tracker.finish();
  return tracker;
}

function estimate(text: string): i64 {
  const e = new TokenEstimator();
  const b = bytes(text);
  e.addUtf8(b);
  return e.tokens();
}

const OPENAI_JSON = '{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o-2024","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19,"completion_tokens_details":{"reasoning_tokens":0}}}';

const OPENAI_SSE_USAGE =
  'data: {"id":"c","model":"gpt-4o","choices":[{"index":0,"delta":{"role":"assistant","content":""}}],"usage":null}\n\n' +
  'data: {"id":"c","model":"gpt-4o","choices":[{"index":0,"delta":{"content":" the"}}],"usage":null}\n\n' +
  'data: {"id":"c","model":"gpt-4o","choices":[{"index":0,"delta":{"content":" mesh"}}],"usage":null}\n\n' +
  'data: {"id":"c","model":"gpt-4o","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}\n\n' +
  'data: {"id":"c","model":"gpt-4o","choices":[],"usage":{"prompt_tokens":21,"completion_tokens":2,"total_tokens":23}}\n\n' +
  "data: [DONE]\n\n";

const ANTHROPIC_SSE =
  'event: message_start\ndata: {"type":"message_start","message":{"id":"m","model":"claude-3-5-sonnet","content":[],"usage":{"input_tokens":30,"cache_read_input_tokens":5,"output_tokens":1}}}\n\n' +
  'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n' +
  'event: ping\ndata: {"type":"ping"}\n\n' +
  'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}\n\n' +
  'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" there"}}\n\n' +
  'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n' +
  'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":9}}\n\n' +
  'event: message_stop\ndata: {"type":"message_stop"}\n\n';

describe("UsageTracker on JSON bodies", () => {
  it("reads OpenAI usage and the model", () => {
    const t = track(false, OPENAI_JSON);
    expect(t.sawUsage).toBe(true);
    expect(t.promptTokens).toBe(12);
    expect(t.completionTokens).toBe(7);
    expect(t.model).toBe("gpt-4o-2024");
    expect(t.firstContentAtMs).toBe(100);
    expect(t.bytes).toBe(OPENAI_JSON.length);
  });

  it("reads Anthropic usage, cached input included", () => {
    const t = track(false, '{"id":"msg","type":"message","model":"claude-3-5-haiku","content":[{"type":"text","text":"Hi"}],"usage":{"input_tokens":40,"cache_creation_input_tokens":10,"cache_read_input_tokens":2,"output_tokens":3}}');
    expect(t.sawUsage).toBe(true);
    expect(t.promptTokens).toBe(52);
    expect(t.completionTokens).toBe(3);
    expect(t.model).toBe("claude-3-5-haiku");
  });

  it("reads embeddings usage: prompt only, no answer text", () => {
    const t = track(false, '{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,-0.2,3e-5]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":8,"total_tokens":8}}');
    expect(t.promptTokens).toBe(8);
    expect(t.sawUsage).toBe(false);
    expect(t.completionTokens).toBe(0);
  });

  it("counts the answer text when the body reports no usage", () => {
    const text = "The quick brown fox jumps over the lazy dog, twice.";
    const t = track(false, '{"model":"m","choices":[{"message":{"role":"assistant","content":"' + text + '"}}]}');
    expect(t.sawUsage).toBe(false);
    expect(t.promptTokens).toBe(-1);
    expect(t.completionTokens).toBe(estimate(text));
  });

  it("gives the same answer for every split of the body", () => {
    for (let size = 1; size < 40; size += 3) {
      const t = trackInPieces(false, OPENAI_JSON, size);
      expect(t.promptTokens).toBe(12);
      expect(t.completionTokens).toBe(7);
      expect(t.model).toBe("gpt-4o-2024");
    }
  });

  it("ignores usage-looking text inside strings and nested objects", () => {
    const t = track(false, '{"model":"m","choices":[{"message":{"content":"\\"usage\\":{\\"completion_tokens\\":1}","usage":{"completion_tokens":2}}}]}');
    expect(t.sawUsage).toBe(false);
    expect(t.completionTokens).toBeGreaterThan(5);
  });

  it("drops a number the body was cut in the middle of", () => {
    const t = track(false, '{"usage":{"prompt_tokens":12,"completion_tokens":7');
    expect(t.sawUsage).toBe(false);
  });

  it("survives bodies that are not JSON", () => {
    const t = track(false, "<html>502 Bad Gateway</html> }}]]\"\\");
    expect(t.sawUsage).toBe(false);
    expect(t.completionTokens).toBe(0);
  });
});

describe("UsageTracker on SSE streams", () => {
  it("takes OpenAI's final usage chunk", () => {
    const t = track(true, OPENAI_SSE_USAGE);
    expect(t.sawUsage).toBe(true);
    expect(t.promptTokens).toBe(21);
    expect(t.completionTokens).toBe(2);
    expect(t.model).toBe("gpt-4o");
  });

  it("counts streamed delta text when the stream has no usage", () => {
    const stream =
      'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}\n\n' +
      'data: {"choices":[{"delta":{"content":" the mesh"}}]}\n\n' +
      'data: {"choices":[{"delta":{"content":" routes every request"}}]}\n\n' +
      "data: [DONE]\n\n";
    const t = track(true, stream);
    expect(t.sawUsage).toBe(false);
    expect(t.completionTokens).toBe(estimate(" the mesh routes every request"));
  });

  it("counts tool-call arguments and completions text", () => {
    const chat = track(true, 'data: {"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"name":"get","arguments":"{\\"city\\": \\"Paris\\"}"}}]}}]}\n\n');
    expect(chat.completionTokens).toBe(estimate('{"city": "Paris"}'));
    const legacy = track(true, 'data: {"choices":[{"text":" hello world","index":0}]}\n\n');
    expect(legacy.completionTokens).toBe(estimate(" hello world"));
  });

  it("reads Anthropic message_start and message_delta usage", () => {
    const t = track(true, ANTHROPIC_SSE);
    expect(t.sawUsage).toBe(true);
    expect(t.promptTokens).toBe(35);
    expect(t.completionTokens).toBe(9);
    expect(t.model).toBe("claude-3-5-sonnet");
  });

  it("keeps the prompt count but counts text when an Anthropic stream is cut", () => {
    const cut = ANTHROPIC_SSE.slice(0, ANTHROPIC_SSE.indexOf("event: content_block_stop"));
    const t = track(true, cut);
    expect(t.sawUsage).toBe(false);
    expect(t.promptTokens).toBe(35);
    expect(t.completionTokens).toBe(estimate("Hi there"));
  });

  it("gives the same counts for every split of the stream", () => {
    const whole = track(true, OPENAI_SSE_USAGE);
    const anthropic = track(true, ANTHROPIC_SSE);
    for (let size = 1; size < 64; size++) {
      const t = trackInPieces(true, OPENAI_SSE_USAGE, size);
      expect(t.completionTokens).toBe(whole.completionTokens);
      expect(t.promptTokens).toBe(whole.promptTokens);
      const a = trackInPieces(true, ANTHROPIC_SSE, size);
      expect(a.completionTokens).toBe(anthropic.completionTokens);
      expect(a.promptTokens).toBe(anthropic.promptTokens);
    }
  });

  it("counts the same text whatever the line endings and data-line layout", () => {
    const lf = track(true, 'data: {"choices":[{"delta":{"content":"Hello"}}]}\n\ndata: {"choices":[{"delta":{"content":" world"}}]}\n\n');
    const crlf = track(true, 'data:{"choices":[{"delta":{"content":"Hello"}}]}\r\n\r\n: comment\r\ndata: {"choices":[{"delta":\r\ndata: {"content":" world"}}]}\r\n\r\n');
    const cr = track(true, 'data: {"choices":[{"delta":{"content":"Hello"}}]}\r\rdata: {"choices":[{"delta":{"content":" world"}}]}\r\r');
    expect(crlf.completionTokens).toBe(lf.completionTokens);
    expect(cr.completionTokens).toBe(lf.completionTokens);
    expect(lf.completionTokens).toBe(estimate("Hello world"));
  });

  it("decodes escapes and multi-byte UTF-8 split across chunks", () => {
    const text = "caf\u00e9 \u65e5\u672c \ud83d\ude00 \"q\"\n";
    const body = 'data: {"choices":[{"delta":{"content":"caf\u00e9 \\u65e5\u672c \\ud83d\\ude00 \\"q\\"\\n"}}]}\n\n';
    for (let size = 1; size < 8; size++) {
      const t = trackInPieces(true, body, size);
      expect(t.completionTokens).toBe(estimate(text));
    }
  });

  it("records when the first answer text arrived, not the role-only chunk", () => {
    const tracker = new UsageTracker(true);
    tracker.onChunk(bytes('data: {"model":"m","choices":[{"delta":{"role":"assistant","content":""}}]}\n\n'), 10);
    expect(tracker.firstContentAtMs).toBe(-1);
    tracker.onChunk(bytes('data: {"choices":[{"delta":{"content":"Hi"}}]}\n\n'), 25);
    tracker.onChunk(bytes('data: {"choices":[{"delta":{"content":"!"}}]}\n\n'), 40);
    tracker.finish();
    expect(tracker.firstContentAtMs).toBe(25);
  });

  it("ignores usage inside error events and other fields", () => {
    const t = track(true, 'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\nid: 3\nretry: 10\n\n');
    expect(t.sawUsage).toBe(false);
    expect(t.completionTokens).toBe(0);
  });

  it("recognises event-stream content types", () => {
    expect(UsageTracker.isEventStream("text/event-stream; charset=utf-8")).toBe(true);
    expect(UsageTracker.isEventStream("Text/Event-Stream")).toBe(true);
    expect(UsageTracker.isEventStream("application/json")).toBe(false);
    expect(UsageTracker.isEventStream(null)).toBe(false);
  });
});

/** Collects the code points a subclass that overrides addText is handed (the router's way of reading the answer). */
class CodePoints extends UsageTracker {
  text: string = "";

  constructor(stream: bool) {
    super(stream, TokenizerFamily.O200K, true);
  }

  addText(cp: i32): void {
    super.addText(cp);
    this.text += String.fromCodePoint(cp);
  }
}

describe("UsageTracker, answer text in runs", () => {
  const MIXED = "caf\u00e9 \u65e5\u672c\u8a9e \ud83d\ude00 na\u00efve \u00fcber";

  it("gives the same count for every split of multi-byte text, at string and line ends too", () => {
    const body = 'data: {"choices":[{"delta":{"content":"' + MIXED + '"}}]}\n\ndata: {"choices":[{"delta":{"content":"\u00e9"}}]}\r\n\r\n';
    const whole = track(true, body);
    expect(whole.completionTokens).toBe(estimate(MIXED + "\u00e9"));
    for (let size = 1; size < 12; size++) {
      expect(trackInPieces(true, body, size).completionTokens).toBe(whole.completionTokens);
    }
  });

  it("counts every chunk's text when the final usage never comes, though each chunk says usage: null", () => {
    const cut = OPENAI_SSE_USAGE.slice(0, OPENAI_SSE_USAGE.indexOf('"choices":[],"usage":{'));
    for (let size = 1; size < 64; size += 7) {
      const t = trackInPieces(true, cut, size);
      expect(t.sawUsage).toBe(false);
      expect(t.completionTokens).toBe(estimate(" the mesh"));
    }
  });

  it("takes the reported count however the text before it was split", () => {
    for (let size = 1; size < 64; size += 5) {
      const t = trackInPieces(true, OPENAI_SSE_USAGE, size);
      expect(t.sawUsage).toBe(true);
      expect(t.completionTokens).toBe(2);
    }
  });

  it("tells when text last came: trailing events without text do not move it", () => {
    const tracker = new UsageTracker(true);
    tracker.onChunk(bytes('data: {"choices":[{"delta":{"role":"assistant","content":""}}]}\n\n'), 10);
    tracker.onChunk(bytes('data: {"choices":[{"delta":{"content":"Hi"}}]}\n\n'), 20);
    tracker.onChunk(bytes('data: {"choices":[{"delta":{"content":" there"}}]}\n\n'), 30);
    tracker.onChunk(bytes('data: {"choices":[{"delta":{},"finish_reason":"stop"}]}\n\ndata: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}\n\n'), 40);
    tracker.finish();
    expect(tracker.firstContentAtMs).toBe(20);
    expect(tracker.lastContentAtMs).toBe(30);
  });

  it("hands a subclass that overrides addText every decoded code point, escapes included", () => {
    const t = new CodePoints(true);
    const body = 'data: {"choices":[{"delta":{"content":"caf\u00e9 \\u65e5 \\ud83d\\ude00 \\"q\\""}}]}\n\n';
    const all = bytes(body);
    for (let start = 0; start < all.length; start += 5) t.onChunk(all.subarray(start, min(all.length, start + 5)), 1);
    t.finish();
    expect(t.text).toBe("caf\u00e9 \u65e5 \ud83d\ude00 \"q\"");
    expect(t.completionTokens).toBe(estimate("caf\u00e9 \u65e5 \ud83d\ude00 \"q\""));
  });

  it("counts a chunk of thousands of escapes exactly, though it keeps only a bounded part of it for the chunk's end", () => {
    let escaped = "";
    let text = "";
    for (let i = 0; i < 3000; i++) {
      escaped += i % 3 == 0 ? "\\n" : "ab\\u00e9";
      text += i % 3 == 0 ? "\n" : "ab\u00e9";
    }
    const t = track(false, '{"choices":[{"message":{"content":"' + escaped + '"}}]}');
    expect(t.completionTokens).toBe(estimate(text));
    expect(trackInPieces(false, '{"choices":[{"message":{"content":"' + escaped + '"}}]}', 100).completionTokens).toBe(estimate(text));
  });

  it("reads the model whole, escapes and all, however it is split", () => {
    const body = '{"model":"gpt-4o-\\u00e9\u00e8","choices":[{"message":{"content":"x"}}],"usage":{"prompt_tokens":1,"completion_tokens":1}}';
    for (let size = 1; size < 20; size += 3) expect(trackInPieces(false, body, size).model).toBe("gpt-4o-\u00e9\u00e8");
  });
});

describe("UsageTracker, why the model stopped", () => {
  it("reads OpenAI's finish_reason and Anthropic's stop_reason, in bodies and streams", () => {
    expect(track(false, OPENAI_JSON).finishReasons).toBe("stop");
    expect(track(true, OPENAI_SSE_USAGE).finishReasons).toBe("stop");
    expect(track(true, ANTHROPIC_SSE).finishReasons).toBe("end_turn");
    expect(track(false, '{"type":"message","model":"claude","stop_reason":"max_tokens","stop_sequence":null,"usage":{"input_tokens":3,"output_tokens":9}}').finishReasons).toBe("max_tokens");
  });

  it("keeps one reason per choice, in order, and passes over nulls", () => {
    const body = '{"model":"m","choices":[{"index":0,"message":{"content":"a"},"finish_reason":"stop"},{"index":1,"message":{"content":"b"},"finish_reason":null},{"index":2,"message":{"content":"c"},"finish_reason":"length"}]}';
    expect(track(false, body).finishReasons).toBe("stop,length");
    expect(track(false, '{"model":"m","choices":[{"message":{"content":"x"}}]}').finishReasons).toBe("");
  });

  it("gives the same reasons for every split, with the model unchanged", () => {
    for (let size = 1; size < 40; size += 3) {
      const json = trackInPieces(false, OPENAI_JSON, size);
      expect(json.finishReasons).toBe("stop");
      expect(json.model).toBe("gpt-4o-2024");
      expect(trackInPieces(true, ANTHROPIC_SSE, size).finishReasons).toBe("end_turn");
    }
  });

  it("takes no reason from answer text, from inside usage, or cut short", () => {
    expect(track(false, '{"model":"m","choices":[{"message":{"content":"\\"finish_reason\\":\\"stop\\""}}]}').finishReasons).toBe("");
    expect(track(false, '{"model":"m","usage":{"finish_reason":"stop","completion_tokens":1}}').finishReasons).toBe("");
    const cut = track(false, '{"model":"gpt-4o","choices":[{"finish_reason":"len');
    expect(cut.finishReasons).toBe("");
    expect(cut.model).toBe("gpt-4o");
  });
});
