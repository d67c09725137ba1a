// Inputs the fuzz run and the parser differential (test/fuzz.test.ts, test/differential.test.ts)
// found read differently by the filters than by model servers; each stays fixed here.
import { parseAdmissionConfig } from "../admission/config";
import { decide, encodedBodyRequest, isPlainEncoding, Outcome } from "../admission/policy";
import { JsonReader } from "../json/reader";
import { ApiShape, apiShapeForPath, LlmRequest, readLlmRequest, routedPath } from "../llm/request";
import { TokenEstimator } from "../llm/tokens";

function read(text: string): LlmRequest {
  return readLlmRequest(Uint8Array.wrap(String.UTF8.encode(text)), ApiShape.OpenAIChat, new TokenEstimator());
}

function skips(text: string): bool {
  const r = new JsonReader(Uint8Array.wrap(String.UTF8.encode(text)));
  return r.skipValue() && r.finish();
}

describe("fuzz regressions", () => {
  it("refuses a model holding a lone surrogate escape: servers keep the half, the reader made it U+FFFD", () => {
    const high = read('{"model":"gpt-4o\\ud800","messages":[]}');
    expect(high.ok).toBe(false);
    expect(high.errorParam).toBe("model");
    expect(read('{"model":"\\udc00gpt-4o","messages":[]}').ok).toBe(false);
    expect(read('{"model":"gpt\\ud800\\u0041","messages":[]}').ok).toBe(false);
    // A proper pair, and a lone half in the prompt (estimated as U+FFFD), still read.
    const pair = read('{"model":"\\ud83d\\ude00","messages":[{"role":"user","content":"a\\ud800b"}]}');
    expect(pair.ok).toBe(true);
    expect(pair.model).toBe("\u{1f600}");
  });

  it("refuses an integer literal of more than 4300 digits, which Python's json.loads refuses", () => {
    const digits = "9".repeat(4301);
    expect(skips(digits)).toBe(false);
    expect(skips("-" + digits)).toBe(false);
    expect(read('{"model":"gpt-4o","max_tokens":' + digits + "}").ok).toBe(false);
    expect(read('{"model":"gpt-4o","metadata":[' + digits + "]}").ok).toBe(false);
    expect(skips("9".repeat(4300))).toBe(true);
    expect(skips("-" + "9".repeat(4300))).toBe(true);
    // Python reads these as floats, without the limit.
    expect(skips(digits + ".5")).toBe(true);
    expect(skips(digits + "e2")).toBe(true);
  });

  it("decodes percent-escapes in the path the way ASGI servers do before routing", () => {
    expect(routedPath("/v1/chat/%63ompletions?a=%41")).toBe("/v1/chat/completions");
    expect(routedPath("/v1/chat%2Fcompletions")).toBe("/v1/chat/completions");
    expect(routedPath("/v1/chat/completions%")).toBe("/v1/chat/completions%");
    expect(routedPath("/v1/%zz%4")).toBe("/v1/%zz%4");
    expect(routedPath("/v1/%2563")).toBe("/v1/%63");
    expect(apiShapeForPath("/v1/chat/%63ompletions")).toBe(ApiShape.OpenAIChat);
    expect(apiShapeForPath("/v1/chat%2Fcompletions")).toBe(ApiShape.OpenAIChat);
    expect(apiShapeForPath("/v1/%6Dessages/")).toBe(ApiShape.AnthropicMessages);
    expect(apiShapeForPath("/v1/%E2%82%ACmbeddings")).toBe(ApiShape.Unknown);
    const admission = parseAdmissionConfig('{"paths":{"/llm/chat":"openai.chat"}}').config!;
    expect(admission.shapeFor("/llm/%63hat")).toBe(ApiShape.OpenAIChat);
    expect(admission.shapeFor("/v1/chat/%63ompletions")).toBe(ApiShape.OpenAIChat);
  });

  it("treats a content-encoded body as one it cannot read: invalid_body decides", () => {
    expect(isPlainEncoding(null)).toBe(true);
    expect(isPlainEncoding("")).toBe(true);
    expect(isPlainEncoding(" Identity ")).toBe(true);
    expect(isPlainEncoding("gzip")).toBe(false);
    expect(isPlainEncoding("identity, gzip")).toBe(false);
    const rejecting = parseAdmissionConfig("{}").config!;
    const verdict = decide(rejecting, encodedBodyRequest(ApiShape.OpenAIChat), 20);
    expect(verdict.outcome).toBe(Outcome.Rejected);
    expect(verdict.error!.status).toBe(400);
    expect(verdict.error!.code).toBe("invalid_request_body");
    const allowing = parseAdmissionConfig('{"invalid_body":"allow"}').config!;
    expect(decide(allowing, encodedBodyRequest(ApiShape.OpenAIChat), 20).outcome).toBe(Outcome.PassedThrough);
  });
});
