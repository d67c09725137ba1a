// The request body's top-level `model`: read to route on it, and rewritten in place for targets that
// serve the model under another name. Only the model's bytes change; the rest of the body goes
// upstream exactly as the client sent it.
import { JsonKind, JsonReader } from "../json/reader";
import { jsonQuote } from "../json/writer";

export class ModelField {
  /** "" when the body has no usable model (see `problem`). */
  model: string = "";
  found: bool = false;
  /** The string token's bytes, quotes included. */
  start: i32 = 0;
  end: i32 = 0;
  /** Why the body cannot be routed on or rewritten; "" when it can. */
  problem: string = "";
}

/**
 * Finds the top-level `model` string. The whole body is checked: a body that is not JSON, or that
 * names two models (the server may read either), has no usable model.
 */
export function findModelField(body: Uint8Array): ModelField {
  const field = new ModelField();
  const reader = new JsonReader(body);
  if (!reader.enterObject()) {
    field.problem = "the body is not a JSON object";
    return field;
  }
  while (reader.nextMember()) {
    if (!reader.keyIs("model")) {
      reader.skipValue();
      continue;
    }
    if (field.found) {
      field.problem = "the body names the model twice";
      return unusable(field);
    }
    if (reader.peek() != JsonKind.String) {
      field.problem = "model is not a string";
      return unusable(field);
    }
    const model = reader.readString();
    if (model == null) break;
    field.found = true;
    field.model = model;
    field.start = reader.lastValue.start;
    field.end = reader.lastValue.end;
  }
  if (!reader.finish()) {
    field.problem = "the body is not valid JSON: " + reader.error;
    return unusable(field);
  }
  if (!field.found) field.problem = "the body has no model";
  return field;
}

function unusable(field: ModelField): ModelField {
  field.found = false;
  field.model = "";
  return field;
}

/** The body with its model string replaced by `model`. */
export function withModel(body: Uint8Array, field: ModelField, model: string): Uint8Array {
  const token = Uint8Array.wrap(String.UTF8.encode(jsonQuote(model)));
  const out = new Uint8Array(body.length - (field.end - field.start) + token.length);
  out.set(body.subarray(0, field.start), 0);
  out.set(token, field.start);
  out.set(body.subarray(field.end), field.start + token.length);
  return out;
}
