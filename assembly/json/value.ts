// A small JSON tree for plugin configuration: parsed once at configure time, then turned into
// typed config objects by config-reader.ts. Request bodies never go through this.
import { JsonKind, JsonReader } from "./reader";

export class JsonValue {
  kind: JsonKind = JsonKind.Null;
  text: string = "";
  number: f64 = 0;
  isInteger: bool = false;
  bool: bool = false;
  items: JsonValue[] = [];
  keys: string[] = [];
  values: JsonValue[] = [];

  /** The member named `key`, or null; keys are unique (the parser refuses duplicates). */
  get(key: string): JsonValue | null {
    for (let i = 0; i < this.keys.length; i++) {
      if (unchecked(this.keys[i]) == key) return unchecked(this.values[i]);
    }
    return null;
  }

  kindName(): string {
    return jsonKindName(this.kind);
  }
}

export function jsonKindName(kind: JsonKind): string {
  switch (kind) {
    case JsonKind.Object: return "an object";
    case JsonKind.Array: return "an array";
    case JsonKind.String: return "a string";
    case JsonKind.Number: return "a number";
    case JsonKind.True:
    case JsonKind.False: return "a boolean";
    case JsonKind.Null: return "null";
    default: return "invalid";
  }
}

export class JsonParseResult {
  value: JsonValue | null = null;
  error: string = "";
}

export function parseJson(text: string): JsonParseResult {
  const bytes = Uint8Array.wrap(String.UTF8.encode(text));
  const reader = new JsonReader(bytes);
  const result = new JsonParseResult();
  const value = readValue(reader, "");
  if (value != null && reader.finish()) {
    result.value = value;
  } else {
    result.error = reader.error + " at byte " + reader.errorAt.toString();
  }
  return result;
}

function readValue(reader: JsonReader, path: string): JsonValue | null {
  const value = new JsonValue();
  value.kind = reader.peek();
  switch (value.kind) {
    case JsonKind.Object: {
      reader.enterObject();
      while (reader.nextMember()) {
        const key = reader.key();
        if (value.keys.includes(key)) {
          reader.fail("duplicate key \"" + key + "\"" + (path.length > 0 ? " in " + path : ""));
          return null;
        }
        const member = readValue(reader, path.length > 0 ? path + "." + key : key);
        if (member == null) return null;
        value.keys.push(key);
        value.values.push(member);
      }
      break;
    }
    case JsonKind.Array: {
      reader.enterArray();
      while (reader.nextElement()) {
        const item = readValue(reader, path + "[" + value.items.length.toString() + "]");
        if (item == null) return null;
        value.items.push(item);
      }
      break;
    }
    case JsonKind.String: {
      const text = reader.readString();
      if (text != null) value.text = text;
      break;
    }
    case JsonKind.Number:
      value.number = reader.readNumber();
      value.isInteger = reader.isInteger;
      break;
    case JsonKind.True:
    case JsonKind.False:
      value.bool = reader.readBool();
      break;
    case JsonKind.Null:
      reader.readNull();
      break;
    default:
      reader.fail("expected a JSON value");
  }
  return reader.failed ? null : value;
}
