import { AdmissionConfig, ModelListMode, parseAdmissionConfig } from "../admission/config";
import { configuredList, filteredList, isListed, isoUtc, ListPlan, planList, retrieveRefusal } from "../admission/models-list";
import { API_ANTHROPIC_MODELS, API_OPENAI_MODELS, isModelListRequest, ModelsCall, readModelsRequest } from "../llm/models-api";

function config(text: string): AdmissionConfig {
  const parsed = parseAdmissionConfig(text);
  expect(parsed.error).toBe("");
  return parsed.config!;
}

function bytes(text: string): Uint8Array {
  return Uint8Array.wrap(String.UTF8.encode(text));
}

function text(body: Uint8Array | null): string {
  expect(body).not.toBeNull();
  return String.UTF8.decodeUnsafe(body!.dataStart, body!.length);
}

const NONE: string[] = [];
const DEMO = '{"models":{"default":{},"gpt-4o-mini":{},"gpt-4o":{},"claude-3-5-haiku*":{},"llama-3*":{}},"unknown_model":"reject"}';

describe("model list requests", () => {
  it("are GETs of a path ending in /models, under any prefix, or naming a model after it", () => {
    expect(readModelsRequest("GET", "/v1/models", null).call).toBe(ModelsCall.List);
    expect(readModelsRequest("GET", "/v1/models/?limit=5", null).call).toBe(ModelsCall.List);
    expect(readModelsRequest("GET", "/openai/v1/models", null).call).toBe(ModelsCall.List);
    expect(readModelsRequest("GET", "/llm/models", null).call).toBe(ModelsCall.List);
    const one = readModelsRequest("GET", "/v1/models/gpt-4o-mini", null);
    expect(one.call).toBe(ModelsCall.Retrieve);
    expect(one.id).toBe("gpt-4o-mini");
    expect(one.api).toBe(API_OPENAI_MODELS);
    // An id with a slash, as the SDKs escape it.
    expect(readModelsRequest("GET", "/v1/models/meta-llama%2FLlama-3-8B/", null).id).toBe("meta-llama/Llama-3-8B");
    const anthropic = readModelsRequest("GET", "/v1/models/claude-3-5-haiku-latest", "2023-06-01");
    expect(anthropic.anthropic).toBe(true);
    expect(anthropic.api).toBe(API_ANTHROPIC_MODELS);
  });

  it("are nothing else", () => {
    expect(readModelsRequest("POST", "/v1/models", null).call).toBe(ModelsCall.None);
    expect(readModelsRequest("GET", "/v1/modelsx", null).call).toBe(ModelsCall.None);
    expect(readModelsRequest("GET", "/v1/chat/completions", null).call).toBe(ModelsCall.None);
    expect(readModelsRequest(null, "/v1/models", null).call).toBe(ModelsCall.None);
    expect(readModelsRequest("GET", null, null).call).toBe(ModelsCall.None);
    expect(isModelListRequest("GET", "/v1/models/gpt-4o")).toBe(false);
    expect(isModelListRequest("GET", "/v1/models")).toBe(true);
  });
});

describe("model_list config", () => {
  it("answers the admitted models when unknown ones are refused and some are listed, else passes the list on", () => {
    expect(config(DEMO).modelList).toBe(ModelListMode.Admitted);
    expect(config('{"models":{"gpt-4o":{}},"unknown_model":"allow"}').modelList).toBe(ModelListMode.Upstream);
    expect(config('{"models":{"default":{"max_prompt_tokens":5}}}').modelList).toBe(ModelListMode.Upstream);
    expect(config("{}").modelList).toBe(ModelListMode.Upstream);
    expect(config('{"models":{"gpt-4o":{}},"model_list":"upstream"}').modelList).toBe(ModelListMode.Upstream);
    expect(config('{"models":{"gpt-4o":{}},"unknown_model":"allow","model_list":"admitted"}').modelList).toBe(ModelListMode.Admitted);
  });

  it("refuses another value, naming the field", () => {
    const parsed = parseAdmissionConfig('{"model_list":"filtered"}');
    expect(parsed.config).toBeNull();
    expect(parsed.error).toBe('model_list: must be one of admitted, upstream, got "filtered"');
  });
});

describe("a model request", () => {
  it("for a refused model gets 404 model_not_found; an admitted one goes to the model server", () => {
    const c = config(DEMO);
    const refusal = retrieveRefusal(c, readModelsRequest("GET", "/v1/models/gpt-9", null))!;
    expect(refusal.status).toBe(404);
    expect(refusal.code).toBe("model_not_found");
    expect(refusal.param).toBe("model");
    expect(refusal.message).toBe("The model `gpt-9` is not served here; allowed: gpt-4o-mini, gpt-4o, claude-3-5-haiku*, llama-3*.");
    expect(retrieveRefusal(c, readModelsRequest("GET", "/v1/models/gpt-4o-mini", null))).toBeNull();
    expect(retrieveRefusal(c, readModelsRequest("GET", "/v1/models/llama-3-70b", null))).toBeNull();
  });
});

describe("the model server's answer", () => {
  it("is filtered when it is a 2xx body that can be read within the limit", () => {
    expect(planList(200, null, 100, false, 1000)).toBe(ListPlan.Filter);
    expect(planList(200, "identity", -1, false, 1000)).toBe(ListPlan.Filter);
  });

  it("is replaced by the configuration's list when there is none to read", () => {
    expect(planList(500, null, 100, false, 1000)).toBe(ListPlan.FromConfig);
    expect(planList(404, null, 100, false, 1000)).toBe(ListPlan.FromConfig);
    expect(planList(200, null, -1, true, 1000)).toBe(ListPlan.FromConfig);
    expect(planList(200, "gzip", 100, false, 1000)).toBe(ListPlan.FromConfig);
    expect(planList(200, null, 1001, false, 1000)).toBe(ListPlan.FromConfig);
  });

  it("is left alone when the model server refused the client's credentials", () => {
    expect(planList(401, null, 100, false, 1000)).toBe(ListPlan.Untouched);
    expect(planList(403, null, 100, false, 1000)).toBe(ListPlan.Untouched);
  });
});

const UPSTREAM = '{"object":"list","data":[' +
  '{"id":"gpt-4o","object":"model","created":1715367049,"owned_by":"system"},' +
  '{"id":"gpt-4o-mini","object":"model","created":1721172741,"owned_by":"system","max_model_len":128000},' +
  ' {"id":"text-embedding-3-small","object":"model","created":1705948997,"owned_by":"system"},' +
  '{"id":"llama-3-8b","object":"model"},{"object":"model"},"odd",{"id":7},' +
  '{"id":"claude-3-5-sonnet-latest","object":"model","created":1,"owned_by":"mock"}],"extra":{"page":1}}';

describe("the list", () => {
  it("keeps the model server's entries a request may name, with every field, in OpenAI's shape", () => {
    expect(text(filteredList(config(DEMO), bytes(UPSTREAM), false, NONE))).toBe('{"object":"list","data":[' +
      '{"id":"gpt-4o","object":"model","created":1715367049,"owned_by":"system"},' +
      '{"id":"gpt-4o-mini","object":"model","created":1721172741,"owned_by":"system","max_model_len":128000},' +
      '{"id":"llama-3-8b","object":"model"}]}');
  });

  it("leaves out names that exist only behind the router, unless models names them exactly", () => {
    const routerOnly = ["llama-3-8b", "gpt-4o", "gpt-4o-mini-2024-07-18"];
    const c = config(DEMO);
    expect(isListed(c, "llama-3-8b", routerOnly)).toBe(false);
    expect(isListed(c, "llama-3-70b", routerOnly)).toBe(true);
    expect(isListed(c, "gpt-4o", routerOnly)).toBe(true);
    expect(isListed(c, "gpt-4o-mini-2024-07-18", routerOnly)).toBe(false);
    const listed = text(filteredList(c, bytes(UPSTREAM), false, routerOnly));
    expect(listed.includes("llama-3-8b")).toBe(false);
    expect(listed.includes('"id":"gpt-4o"')).toBe(true);
  });

  it("turns OpenAI-shaped entries into Anthropic's for a client that sends anthropic-version", () => {
    const c = config('{"models":{"gpt-4o-mini":{},"claude-*":{}}}');
    expect(text(filteredList(c, bytes(UPSTREAM), true, NONE))).toBe('{"data":[' +
      '{"type":"model","id":"gpt-4o-mini","display_name":"gpt-4o-mini","created_at":"2024-07-16T23:32:21Z"},' +
      '{"type":"model","id":"claude-3-5-sonnet-latest","display_name":"claude-3-5-sonnet-latest","created_at":"1970-01-01T00:00:01Z"}' +
      '],"has_more":false,"first_id":"gpt-4o-mini","last_id":"claude-3-5-sonnet-latest"}');
  });

  it("keeps Anthropic's entries as they are, its has_more, and cursors that name only what is shown", () => {
    const anthropic = '{"data":[{"type":"model","id":"claude-3-opus","display_name":"Claude 3 Opus","created_at":"2024-02-29T00:00:00Z"},' +
      '{"type":"model","id":"claude-3-5-haiku-latest","display_name":"Claude Haiku","created_at":"2024-10-22T00:00:00Z"},' +
      '{"type":"model","id":"claude-3-5-haiku-20241022","display_name":"Claude Haiku","created_at":"2024-10-22T00:00:00Z"},' +
      '{"type":"model","id":"claude-9","display_name":"Claude 9","created_at":"2030-01-01T00:00:00Z"}],' +
      '"has_more":true,"first_id":"claude-3-opus","last_id":"claude-9"}';
    expect(text(filteredList(config(DEMO), bytes(anthropic), true, NONE))).toBe('{"data":[' +
      '{"type":"model","id":"claude-3-5-haiku-latest","display_name":"Claude Haiku","created_at":"2024-10-22T00:00:00Z"},' +
      '{"type":"model","id":"claude-3-5-haiku-20241022","display_name":"Claude Haiku","created_at":"2024-10-22T00:00:00Z"}' +
      '],"has_more":true,"first_id":"claude-3-5-haiku-latest","last_id":"claude-3-5-haiku-20241022"}');
  });

  it("is empty when nothing the model server lists is admitted, or it lists nothing", () => {
    const c = config('{"models":{"mistral-*":{}}}');
    expect(text(filteredList(c, bytes(UPSTREAM), false, NONE))).toBe('{"object":"list","data":[]}');
    expect(text(filteredList(c, bytes('{"object":"list","data":[]}'), true, NONE))).toBe('{"data":[],"has_more":false,"first_id":null,"last_id":null}');
  });

  it("is none when the body is not a list", () => {
    const c = config(DEMO);
    expect(filteredList(c, bytes(""), false, NONE)).toBeNull();
    expect(filteredList(c, bytes("<html>not found</html>"), false, NONE)).toBeNull();
    expect(filteredList(c, bytes('{"object":"list"}'), false, NONE)).toBeNull();
    expect(filteredList(c, bytes('{"data":{}}'), false, NONE)).toBeNull();
    expect(filteredList(c, bytes('{"data":[{"id":"gpt-4o"}],"data":[]}'), false, NONE)).toBeNull();
    expect(filteredList(c, bytes('{"data":[{"id":"gpt-4o"}]'), false, NONE)).toBeNull();
    // Two ids in one entry could be read either way: that entry is left out.
    expect(text(filteredList(c, bytes('{"data":[{"id":"gpt-9","id":"gpt-4o"}]}'), false, NONE))).toBe('{"object":"list","data":[]}');
  });

  it("comes from the configuration's exact names when the model server has none", () => {
    const c = config(DEMO);
    expect(text(configuredList(c, false))).toBe('{"object":"list","data":[' +
      '{"id":"gpt-4o-mini","object":"model","created":0,"owned_by":"llm-mesh"},{"id":"gpt-4o","object":"model","created":0,"owned_by":"llm-mesh"}]}');
    expect(text(configuredList(c, true))).toBe('{"data":[' +
      '{"type":"model","id":"gpt-4o-mini","display_name":"gpt-4o-mini","created_at":"1970-01-01T00:00:00Z"},' +
      '{"type":"model","id":"gpt-4o","display_name":"gpt-4o","created_at":"1970-01-01T00:00:00Z"}],"has_more":false,"first_id":"gpt-4o-mini","last_id":"gpt-4o"}');
    expect(text(configuredList(config('{"models":{"llama-*":{}}}'), false))).toBe('{"object":"list","data":[]}');
  });

  it("writes creation times as Anthropic does", () => {
    expect(isoUtc(0)).toBe("1970-01-01T00:00:00Z");
    expect(isoUtc(951782400)).toBe("2000-02-29T00:00:00Z");
    expect(isoUtc(1700000000)).toBe("2023-11-14T22:13:20Z");
    expect(isoUtc(253402300799)).toBe("9999-12-31T23:59:59Z");
  });
});
