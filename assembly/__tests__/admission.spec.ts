import { parseAdmissionConfig, AdmissionConfig, OutputLimitAction } from "../admission/config";
import { checkDeclaredLength, clampedBody, decide, Outcome } from "../admission/policy";
import { ApiShape, readLlmRequest, LlmRequest } from "../llm/request";
import { TokenEstimator, TokenizerFamily } from "../llm/tokens";

function config(text: string): AdmissionConfig {
  const parsed = parseAdmissionConfig(text);
  expect(parsed.error).toBe("");
  return parsed.config!;
}

function configError(text: string): string {
  const parsed = parseAdmissionConfig(text);
  expect(parsed.config).toBeNull();
  return parsed.error;
}

function chat(text: string): LlmRequest {
  return readLlmRequest(Uint8Array.wrap(String.UTF8.encode(text)), ApiShape.OpenAIChat, new TokenEstimator());
}

describe("admission config", () => {
  it("has working defaults for an empty config", () => {
    const c = config("");
    expect(c.defaults.maxBodyBytes).toBe(1048576);
    expect(c.defaults.maxPromptTokens).toBe(128000);
    expect(c.defaults.maxOutputTokens).toBe(0);
    expect(c.shapeFor("/v1/chat/completions")).toBe(ApiShape.OpenAIChat);
    expect(c.limitsFor("anything")).not.toBeNull();
  });

  it("inherits model entries from the default entry and matches prefixes", () => {
    const c = config('{"models":{"default":{"max_output_tokens":100,"output_limit_action":"clamp"},"llama-*":{"max_prompt_tokens":50,"tokenizer":"cl100k"},"llama-3-70b":{"max_prompt_tokens":70}}}');
    const llama = c.limitsFor("llama-2")!;
    expect(llama.maxPromptTokens).toBe(50);
    expect(llama.maxOutputTokens).toBe(100);
    expect(llama.outputLimitAction).toBe(OutputLimitAction.Clamp);
    expect(llama.tokenizer).toBe(TokenizerFamily.CL100K);
    expect(c.limitsFor("llama-3-70b")!.maxPromptTokens).toBe(70);
    expect(c.limitsFor("gpt-4o")).toBeNull();
  });

  it("lets unknown models through when asked to", () => {
    const c = config('{"unknown_model":"allow","models":{"a":{}}}');
    expect(c.limitsFor("b")).toBe(c.defaults);
  });

  it("limits the APIs and maps custom paths", () => {
    const c = config('{"apis":["anthropic.messages"],"paths":{"/llm/chat":"openai.chat","/claude":"anthropic.messages"}}');
    expect(c.shapeFor("/v1/chat/completions")).toBe(ApiShape.Unknown);
    expect(c.shapeFor("/v1/messages")).toBe(ApiShape.AnthropicMessages);
    expect(c.shapeFor("/claude?beta=1")).toBe(ApiShape.AnthropicMessages);
    expect(c.shapeFor("/llm/chat")).toBe(ApiShape.Unknown);
  });

  it("refuses bad configs naming the field and the reason", () => {
    expect(configError("{")).toBe("(config): not valid JSON: unexpected end of input at byte 1");
    expect(configError("[]")).toBe("(config): must be a JSON object, got an array");
    expect(configError('{"models":{"default":{"max_prompt_tokens":-5}}}')).toBe("models.default.max_prompt_tokens: must be an integer from 0 to 100000000, got -5");
    expect(configError('{"models":{"gpt":{"max_body_bytes":"big"}}}')).toBe('models.gpt.max_body_bytes: must be an integer from 1 to 67108864, got "big"');
    expect(configError('{"models":{"gpt":{"output_limit_action":"drop"}}}')).toBe('models.gpt.output_limit_action: must be one of reject, clamp, got "drop"');
    expect(configError('{"models":{"gpt":{"tokenizer":"p50k"}}}')).toBe('models.gpt.tokenizer: must be one of o200k, cl100k, got "p50k"');
    expect(configError('{"models":{"g*pt":{}}}')).toBe("models.g*pt: a model name may end in * (a prefix match) but contain no other *");
    expect(configError('{"apis":["openai.chat","grpc"]}')).toBe('apis[1]: unknown API "grpc" (known: openai.chat, openai.completions, openai.embeddings, anthropic.messages)');
    expect(configError('{"paths":{"chat":"openai.chat"}}')).toBe("paths.chat: a path must start with /");
    expect(configError('{"unknown_model":"maybe"}')).toBe('unknown_model: must be one of reject, allow, got "maybe"');
    expect(configError('{"max_body_bytes":5}')).toBe("max_body_bytes: unknown key (allowed: apis, paths, models, unknown_model, model_list, invalid_body, forward_headers, hold_headers, hold_headers_timeout_ms, filter_state)");
    expect(configError('{"forward_headers":"yes"}')).toBe('forward_headers: must be true or false, got "yes"');
    expect(configError('{"hold_headers_timeout_ms":9}')).toBe("hold_headers_timeout_ms: must be an integer from 10 to 60000, got 9");
    expect(configError('{"hold_headers_timeout_ms":60001}')).toBe("hold_headers_timeout_ms: must be an integer from 10 to 60000, got 60001");
    expect(configError('{"hold_headers_timeout_ms":"1s"}')).toBe('hold_headers_timeout_ms: must be an integer from 10 to 60000, got "1s"');
  });

  it("leaves its facts in Envoy's filter state unless told otherwise", () => {
    expect(config("").filterState).toBe(true);
    expect(config('{"filter_state":false}').filterState).toBe(false);
    expect(configError('{"filter_state":"off"}')).toBe('filter_state: must be true or false, got "off"');
    expect(configError('{"filter_state":0}')).toBe("filter_state: must be true or false, got 0");
  });

  it("waits a second for a held request's body unless told otherwise", () => {
    expect(config("").holdHeadersTimeoutMs).toBe(1000);
    expect(config('{"hold_headers":true,"hold_headers_timeout_ms":10}').holdHeadersTimeoutMs).toBe(10);
    expect(config('{"hold_headers_timeout_ms":60000}').holdHeadersTimeoutMs).toBe(60000);
  });
});

describe("admission decisions", () => {
  const limits = '{"models":{"default":{"max_body_bytes":2000,"max_prompt_tokens":40,"max_output_tokens":100},"small":{"max_output_tokens":10,"output_limit_action":"clamp"}},"unknown_model":"allow"}';

  it("admits a request within every limit", () => {
    const verdict = decide(config(limits), chat('{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":50}'), 60);
    expect(verdict.outcome).toBe(Outcome.Admitted);
  });

  it("rejects a declared length over the largest limit before reading the body", () => {
    const error = checkDeclaredLength(config(limits), 2001)!;
    expect(error.status).toBe(413);
    expect(error.message).toBe("Request body is 2001 bytes; the limit is 2000 bytes.");
    expect(checkDeclaredLength(config(limits), 2000)).toBeNull();
  });

  it("rejects a prompt over the token limit with both figures", () => {
    let long = "";
    for (let i = 0; i < 60; i++) long += "word ";
    const request = chat('{"model":"m","messages":[{"role":"user","content":"' + long + '"}]}');
    const verdict = decide(config(limits), request, 400);
    expect(verdict.outcome).toBe(Outcome.Rejected);
    expect(verdict.error!.status).toBe(413);
    expect(verdict.error!.code).toBe("context_length_exceeded");
    expect(verdict.error!.message).toBe("The prompt is estimated at " + request.promptTokens.toString() + " tokens; the limit for model `m` is 40 tokens.");
  });

  it("rejects or clamps an output budget over the limit, per model", () => {
    const rejected = decide(config(limits), chat('{"model":"m","max_tokens":101}'), 30);
    expect(rejected.error!.status).toBe(400);
    expect(rejected.error!.param).toBe("max_tokens");
    expect(rejected.error!.message).toBe("max_tokens is 101; the limit for model `m` is 100.");
    const clamped = decide(config(limits), chat('{"model":"small","max_tokens":500}'), 30);
    expect(clamped.outcome).toBe(Outcome.Clamped);
    expect(clamped.clampTo).toBe(10);
  });

  it("rejects unknown and missing models unless allowed", () => {
    const strict = config('{"models":{"a":{},"b*":{}}}');
    const unknown = decide(strict, chat('{"model":"c"}'), 10);
    expect(unknown.error!.code).toBe("model_not_found");
    expect(unknown.error!.message).toBe("The model `c` is not served here; allowed: a, b*.");
    expect(decide(strict, chat("{}"), 2).error!.code).toBe("model_required");
    expect(decide(strict, chat('{"model":"b2"}'), 10).outcome).toBe(Outcome.Admitted);
  });

  it("rejects or passes malformed bodies per config", () => {
    expect(decide(config("{}"), chat("{"), 1).error!.code).toBe("invalid_request_body");
    expect(decide(config('{"invalid_body":"allow"}'), chat("{"), 1).outcome).toBe(Outcome.PassedThrough);
  });
});

describe("clampedBody", () => {
  it("rewrites only the budget numbers that exceed the limit", () => {
    const text = '{"max_tokens":900,"model":"m","max_completion_tokens":5000,"n":1}';
    const body = Uint8Array.wrap(String.UTF8.encode(text));
    const request = readLlmRequest(body, ApiShape.OpenAIChat, new TokenEstimator());
    const out = clampedBody(body, request, 1000);
    expect(String.UTF8.decode(out.buffer)).toBe('{"max_tokens":900,"model":"m","max_completion_tokens":1000,"n":1}');
    const both = clampedBody(body, request, 64);
    expect(String.UTF8.decode(both.buffer)).toBe('{"max_tokens":64,"model":"m","max_completion_tokens":64,"n":1}');
  });
});
