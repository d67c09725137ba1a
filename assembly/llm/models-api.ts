// The model list and one model's card: `GET /v1/models` and `GET /v1/models/{id}`, the same paths in
// OpenAI's API and Anthropic's (whose SDKs always send `anthropic-version`). Admission answers them
// with what the gateway serves, the router says which names exist only behind it, and metrics counts
// them under their own API label.
import { filterState, setFilterState } from "../host/filter-state";
import { routedPath } from "./request";
import { FACT_ROUTER_MODELS } from "./filter-state-names";

export enum ModelsCall {
  None = 0,
  /** `GET …/models`: the list. */
  List,
  /** `GET …/models/{id}`: one model. */
  Retrieve,
}

/** The `llm_api` label values of these requests. */
export const API_OPENAI_MODELS = "openai.models";
export const API_ANTHROPIC_MODELS = "anthropic.models";

const MODELS_SEGMENT = "/models";

export class ModelsRequest {
  call: ModelsCall = ModelsCall.None;
  /** The model a retrieve names, percent-escapes decoded (an id may hold a `/`); "" for a list. */
  id: string = "";
  /** Whether the client speaks Anthropic's API. */
  anthropic: bool = false;

  get api(): string {
    return this.anthropic ? API_ANTHROPIC_MODELS : API_OPENAI_MODELS;
  }
}

/**
 * What a request asks of the model list, by method and path: a GET whose path, as the model server
 * routes it, ends in `/models` (under any prefix, as the other endpoints are matched by their
 * suffix) or goes on with `/models/{id}`. Trailing slashes are ignored.
 */
export function readModelsRequest(method: string | null, path: string | null, anthropicVersion: string | null): ModelsRequest {
  const request = new ModelsRequest();
  if (method == null || method != "GET" || path == null) return request;
  let clean = routedPath(path);
  while (clean.length > 1 && clean.endsWith("/")) clean = clean.slice(0, clean.length - 1);
  if (clean.endsWith(MODELS_SEGMENT)) {
    request.call = ModelsCall.List;
  } else {
    const at = clean.indexOf(MODELS_SEGMENT + "/");
    if (at < 0) return request;
    request.call = ModelsCall.Retrieve;
    request.id = clean.slice(at + MODELS_SEGMENT.length + 1);
  }
  request.anthropic = anthropicVersion != null;
  return request;
}

/** Whether a request is for the model list (the router needs no more than that). */
export function isModelListRequest(method: string | null, path: string | null): bool {
  return readModelsRequest(method, path, null).call == ModelsCall.List;
}

export function publishRouterModels(names: string[]): void {
  if (names.length > 0) setFilterState(FACT_ROUTER_MODELS, names.join("\n"));
}

/** The names the router published for this request (it sees the answer before admission); none without a router. */
export function routerModels(): string[] {
  const text = filterState(FACT_ROUTER_MODELS);
  return text != null && text.length > 0 ? text.split("\n") : [];
}
