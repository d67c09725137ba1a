import { ApiShape, apiShapeForPath, genAiOperation, genAiProvider, readLlmRequest, TOKENS_PER_IMAGE } from "../llm/request";
import { TokenEstimator } from "../llm/tokens";

function read(shape: ApiShape, text: string): LlmRequest {
  return readLlmRequest(Uint8Array.wrap(String.UTF8.encode(text)), shape, new TokenEstimator());
}

import { LlmRequest } from "../llm/request";

describe("apiShapeForPath", () => {
  it("recognises each API by its endpoint", () => {
    expect(apiShapeForPath("/v1/chat/completions")).toBe(ApiShape.OpenAIChat);
    expect(apiShapeForPath("/openai/v1/chat/completions?x=1")).toBe(ApiShape.OpenAIChat);
    expect(apiShapeForPath("/v1/completions")).toBe(ApiShape.OpenAICompletions);
    expect(apiShapeForPath("/v1/embeddings/")).toBe(ApiShape.OpenAIEmbeddings);
    expect(apiShapeForPath("/v1/messages")).toBe(ApiShape.AnthropicMessages);
    expect(apiShapeForPath("/v1/models")).toBe(ApiShape.Unknown);
    expect(apiShapeForPath("/")).toBe(ApiShape.Unknown);
  });
});

describe("OpenTelemetry GenAI names of an API", () => {
  it("gives each shape its operation and provider, and an unknown one neither", () => {
    expect(genAiOperation(ApiShape.OpenAIChat)).toBe("chat");
    expect(genAiOperation(ApiShape.AnthropicMessages)).toBe("chat");
    expect(genAiOperation(ApiShape.OpenAICompletions)).toBe("text_completion");
    expect(genAiOperation(ApiShape.OpenAIEmbeddings)).toBe("embeddings");
    expect(genAiProvider(ApiShape.OpenAIEmbeddings)).toBe("openai");
    expect(genAiProvider(ApiShape.AnthropicMessages)).toBe("anthropic");
    expect(genAiOperation(ApiShape.Unknown)).toBe("");
    expect(genAiProvider(ApiShape.Unknown)).toBe("");
  });
});

describe("readLlmRequest", () => {
  it("reads model, budget, streaming and message count from a chat request", () => {
    const r = read(ApiShape.OpenAIChat, '{"model":"gpt-4o","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"Hello there"}]}],"max_completion_tokens":256,"stream":true,"stream_options":{"include_usage":true}}');
    expect(r.error).toBe("");
    expect(r.model).toBe("gpt-4o");
    expect(r.maxTokens).toBe(256);
    expect(r.maxTokensField).toBe("max_completion_tokens");
    expect(r.stream).toBe(true);
    expect(r.includeUsage).toBe(true);
    expect(r.messages).toBe(2);
    expect(r.promptTokens).toBeGreaterThan(2 * 4 + 3);
  });

  it("counts more tokens for a longer prompt", () => {
    const short = read(ApiShape.OpenAIChat, '{"model":"m","messages":[{"role":"user","content":"hi"}]}');
    const long = read(ApiShape.OpenAIChat, '{"model":"m","messages":[{"role":"user","content":"hi, here is a much longer question about the weather in several cities"}]}');
    expect(long.promptTokens).toBeGreaterThan(short.promptTokens + 8);
  });

  it("reads Anthropic system prompts and content blocks", () => {
    const r = read(ApiShape.AnthropicMessages, '{"model":"claude","max_tokens":100,"system":[{"type":"text","text":"You are terse."}],"messages":[{"role":"user","content":[{"type":"text","text":"Hi"},{"type":"image","source":{"type":"base64","data":"AAAA"}}]}]}');
    expect(r.error).toBe("");
    expect(r.maxTokens).toBe(100);
    expect(r.promptTokens).toBeGreaterThan(TOKENS_PER_IMAGE);
  });

  it("counts pre-tokenized prompts exactly", () => {
    const r = read(ApiShape.OpenAICompletions, '{"model":"m","prompt":[[1,2,3],[4,5]]}');
    expect(r.promptTokens).toBe(5);
    const e = read(ApiShape.OpenAIEmbeddings, '{"model":"m","input":[7,8,9]}');
    expect(e.promptTokens).toBe(3);
  });

  it("refuses duplicate keys that change what the model would read", () => {
    expect(read(ApiShape.OpenAIChat, '{"model":"a","model":"b","messages":[]}').error).toBe('duplicate key "model" makes the request ambiguous');
    expect(read(ApiShape.OpenAIChat, '{"model":"a","mod\\u0065l":"b","messages":[]}').error).toBe('duplicate key "model" makes the request ambiguous');
    expect(read(ApiShape.OpenAIChat, '{"model":"a","max_tokens":1,"max_tokens":100000}').errorParam).toBe("max_tokens");
    expect(read(ApiShape.OpenAIChat, '{"model":"a","messages":[{"role":"user","content":"x","content":"y"}]}').error).toBe('duplicate key "content" in a message makes the request ambiguous');
  });

  it("refuses wrong types with the parameter named", () => {
    expect(read(ApiShape.OpenAIChat, '{"model":5}').errorParam).toBe("model");
    expect(read(ApiShape.OpenAIChat, '{"model":"m","max_tokens":"100"}').errorParam).toBe("max_tokens");
    expect(read(ApiShape.OpenAIChat, '{"model":"m","max_tokens":1.5}').errorParam).toBe("max_tokens");
    expect(read(ApiShape.OpenAIChat, '{"model":"m","max_tokens":-1}').errorParam).toBe("max_tokens");
    expect(read(ApiShape.OpenAIChat, '{"model":"m","messages":{}}').errorParam).toBe("messages");
    expect(read(ApiShape.OpenAIChat, '{"model":"m","stream":"yes"}').errorParam).toBe("stream");
  });

  it("explains malformed bodies", () => {
    expect(read(ApiShape.OpenAIChat, "").error).toBe("the request body is empty");
    expect(read(ApiShape.OpenAIChat, "[1]").error).toBe("the request body must be a JSON object");
    expect(read(ApiShape.OpenAIChat, '{"model":"m"').error).toBe("the request body is not valid JSON: unexpected end of input at byte 12");
  });

  it("keeps every output budget's position for rewriting", () => {
    const r = read(ApiShape.OpenAIChat, '{"max_tokens":900,"model":"m","max_completion_tokens":50}');
    expect(r.outputBudgets.length).toBe(2);
    expect(r.maxTokens).toBe(900);
    expect(r.outputBudgets[0].span.start).toBe(14);
    expect(r.outputBudgets[0].span.end).toBe(17);
  });
});
