// The texts one llm-mesh filter hands another through filter state: the usage it read from the
// response (UsageFigures) and the facts of the request (RequestFacts in FACT_ALL).
import { ApiShape } from "../llm/request";
import { RequestFacts } from "../llm/request-facts";
import { UsageTracker } from "../llm/usage-tracker";
import { UsageFigures } from "../llm/usage-handoff";

describe("usage figures handed from llm-metrics to llm-throttle", () => {
  it("read back as written, with -1 for a prompt the response did not report", () => {
    const written = new UsageFigures(-1, 42).toString();
    expect(written).toBe("-1,42");
    const read = UsageFigures.parse(written)!;
    expect(read.promptTokens).toBe(-1);
    expect(read.completionTokens).toBe(42);
    const big = UsageFigures.parse(new UsageFigures(123456789012, 0).toString())!;
    expect(big.promptTokens).toBe(123456789012);
    expect(big.completionTokens).toBe(0);
  });

  it("come from a tracker's final counts", () => {
    const tracker = new UsageTracker(false);
    tracker.onChunk(Uint8Array.wrap(String.UTF8.encode('{"usage":{"prompt_tokens":12,"completion_tokens":7}}')), 1);
    tracker.finish();
    expect(UsageFigures.of(tracker).toString()).toBe("12,7");
  });

  it("refuse anything else", () => {
    const bad = ["", "12", ",", "12,", ",7", "a,7", "12,b", "-2,7", "12,-1", "1 2,3", "12,7,", "1234567890123456789,1"];
    for (let i = 0; i < bad.length; i++) expect(UsageFigures.parse(bad[i])).toBeNull();
  });
});

describe("request facts in one filter state", () => {
  it("read back as written, a model with commas included", () => {
    const facts = new RequestFacts();
    facts.shape = ApiShape.AnthropicMessages;
    facts.model = "org/model,v2";
    facts.promptTokens = 321;
    facts.maxTokens = 1024;
    facts.stream = true;
    const read = RequestFacts.parse(facts.toString())!;
    expect(read.shape).toBe(ApiShape.AnthropicMessages);
    expect(read.model).toBe("org/model,v2");
    expect(read.promptTokens).toBe(321);
    expect(read.maxTokens).toBe(1024);
    expect(read.stream).toBe(true);
  });

  it("keep an unset output budget unset", () => {
    const facts = new RequestFacts();
    facts.shape = ApiShape.OpenAIChat;
    facts.model = "gpt-4o";
    const read = RequestFacts.parse(facts.toString())!;
    expect(read.maxTokens).toBe(-1);
    expect(read.stream).toBe(false);
    expect(read.promptTokens).toBe(0);
  });

  it("refuse text not written by toString", () => {
    expect(RequestFacts.parse("")).toBeNull();
    expect(RequestFacts.parse("openai.chat,1,2")).toBeNull();
    expect(RequestFacts.parse("openai.chat,1,2,true,m")).toBeNull();
  });
});
