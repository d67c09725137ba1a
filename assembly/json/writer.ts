// JSON text for what the filters write themselves: error bodies, records, filter state.

const HEX = "0123456789abcdef";

/** `text` as a JSON string literal, quotes included. */
export function jsonQuote(text: string): string {
  let out = "\"";
  let runStart = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c >= 0x20 && c != 0x22 && c != 0x5c) continue;
    out += text.slice(runStart, i);
    runStart = i + 1;
    if (c == 0x22) out += "\\\"";
    else if (c == 0x5c) out += "\\\\";
    else if (c == 0x0a) out += "\\n";
    else if (c == 0x0d) out += "\\r";
    else if (c == 0x09) out += "\\t";
    else out += "\\u00" + HEX.charAt(c >> 4) + HEX.charAt(c & 15);
  }
  return out + text.slice(runStart) + "\"";
}

/** Builds a flat JSON object one member at a time, in insertion order. */
export class JsonObjectWriter {
  private text: string = "{";

  raw(key: string, jsonText: string): JsonObjectWriter {
    if (this.text.length > 1) this.text += ",";
    this.text += jsonQuote(key) + ":" + jsonText;
    return this;
  }

  string(key: string, value: string): JsonObjectWriter {
    return this.raw(key, jsonQuote(value));
  }

  int(key: string, value: i64): JsonObjectWriter {
    return this.raw(key, value.toString());
  }

  bool(key: string, value: bool): JsonObjectWriter {
    return this.raw(key, value ? "true" : "false");
  }

  toString(): string {
    return this.text + "}";
  }
}
