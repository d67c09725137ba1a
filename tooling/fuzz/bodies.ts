// Request bodies for the fuzz run and the parser differential: well-formed requests of each API,
// then the same with one thing wrong (a field of the wrong type, a duplicate or escaped key, a
// tricky number, invalid UTF-8, deep nesting, a huge value, a random byte mutation). Bodies are
// assembled from raw JSON text so that they can hold what JSON.stringify never writes.
import { Rng } from "./rng.ts";

export type Shape = "openai.chat" | "openai.completions" | "openai.embeddings" | "anthropic.messages";

export const ENDPOINTS: ReadonlyArray<{ path: string; shape: Shape }> = [
  { path: "/v1/chat/completions", shape: "openai.chat" },
  { path: "/v1/completions", shape: "openai.completions" },
  { path: "/v1/embeddings", shape: "openai.embeddings" },
  { path: "/v1/messages", shape: "anthropic.messages" },
];

/** Models the fuzz admission config allows (names and prefixes, see test/fuzz.test.ts). */
export const ALLOWED_MODELS = ["gpt-4o", "gpt-4o-mini", "claude-3-5-haiku-20241022", "llama-3.1-8b", "text-embedding-3-small"];
/** Names that must not pass for an allowed one. */
export const OTHER_MODELS = [
  "gpt-5", "", "GPT-4O", "gpt-4o ", " gpt-4o", "gpt-4o\u0000", "gpt-4o\n", "gpt-4o\u200b", "gpt-4", "claude-3-5-haiku",
  "llama-3", "llama-2-70b", "x".repeat(300), "gpt-4o\ud800", "\ud83d\ude00", "gpt\u00ad4o",
];

/** A member as raw JSON text: the key literal (quotes included) and the value's JSON text. */
export type Member = [key: string, value: string];

export const lit = (value: unknown): string => JSON.stringify(value);
export const key = (name: string): string => JSON.stringify(name);
export const objectText = (members: Member[]): string => `{${members.map(([k, v]) => `${k}:${v}`).join(",")}}`;

/** A JSON string literal of `name` with one character written as a \u escape (upper or lower hex). */
export function escapedLiteral(rng: Rng, name: string): string {
  if (name.length === 0) return '""';
  const at = rng.int(name.length);
  let hex = name.charCodeAt(at).toString(16).padStart(4, "0");
  if (rng.chance(0.5)) hex = hex.toUpperCase();
  const head = JSON.stringify(name.slice(0, at)).slice(0, -1);
  const tail = JSON.stringify(name.slice(at + 1)).slice(1);
  return `${head}\\u${hex}${tail}`;
}

// ---------------------------------------------------------------- text

const WORDS = [
  "hello", "mesh", "token", "the", "a", "prompt", "Ünïcödé", "naïve", "日本語", "한국어", "Привет", "مرحبا", "🙂", "👩‍💻", "∑", "\t", "\n",
  "  ", "1234567", "3.14", "\"quoted\"", "back\\slash", "</script>", "\u0000", "\u007f", "\u2028", "é", "ß", "x",
];

export function text(rng: Rng, maxWords = 12): string {
  const n = rng.int(maxWords + 1);
  let out = "";
  for (let i = 0; i < n; i++) out += (i && rng.chance(0.7) ? " " : "") + rng.pick(WORDS);
  return out;
}

function contentValue(rng: Rng): unknown {
  if (rng.chance(0.6)) return text(rng);
  const parts: unknown[] = [];
  for (let i = rng.int(3) + 1; i > 0; i--) {
    parts.push(rng.chance(0.85) ? { type: "text", text: text(rng) } : { type: "image_url", image_url: { url: "data:image/png;base64,AAAA" } });
  }
  return parts;
}

function messagesValue(rng: Rng, shape: Shape): unknown[] {
  const out: unknown[] = [];
  const n = rng.range(1, 4);
  for (let i = 0; i < n; i++) {
    const role = shape === "anthropic.messages" ? (i % 2 ? "assistant" : "user") : rng.pick(["system", "user", "assistant"]);
    out.push({ role, content: contentValue(rng) });
  }
  return out;
}

// ---------------------------------------------------------------- well-formed requests

export function pickModel(rng: Rng, shape: Shape): string {
  if (rng.chance(0.25)) return rng.pick(OTHER_MODELS);
  if (shape === "openai.embeddings") return rng.chance(0.7) ? "text-embedding-3-small" : rng.pick(ALLOWED_MODELS);
  if (shape === "anthropic.messages") return rng.chance(0.7) ? "claude-3-5-haiku-20241022" : rng.pick(ALLOWED_MODELS);
  return rng.pick(ALLOWED_MODELS);
}

/** Output budgets around the fuzz limit (4096), most of them within it. */
function budget(rng: Rng): number {
  return rng.weighted([
    [6, rng.range(1, 64)],
    [2, rng.range(65, 4096)],
    [1, rng.range(4097, 100000)],
    [0.3, 0],
  ]);
}

/** The members of a well-formed request of `shape`, in a random order. */
export function requestMembers(rng: Rng, shape: Shape): Member[] {
  const members: Member[] = [];
  if (rng.chance(0.97)) members.push([key("model"), lit(pickModel(rng, shape))]);
  switch (shape) {
    case "openai.chat":
      members.push([key("messages"), lit(messagesValue(rng, shape))]);
      if (rng.chance(0.5)) members.push([key(rng.chance(0.5) ? "max_tokens" : "max_completion_tokens"), lit(budget(rng))]);
      if (rng.chance(0.1)) members.push([key("tools"), lit([{ type: "function", function: { name: "lookup", description: text(rng), parameters: { type: "object" } } }])]);
      break;
    case "anthropic.messages":
      members.push([key("messages"), lit(messagesValue(rng, shape))]);
      members.push([key("max_tokens"), lit(budget(rng))]);
      if (rng.chance(0.3)) members.push([key("system"), lit(rng.chance(0.5) ? text(rng) : [{ type: "text", text: text(rng) }])]);
      break;
    case "openai.completions":
      members.push([key("prompt"), lit(rng.weighted<unknown>([[5, text(rng)], [1, [text(rng), text(rng)]], [1, [1, 2, 3]], [1, [[4, 5], [6]]]]))]);
      if (rng.chance(0.5)) members.push([key("max_tokens"), lit(budget(rng))]);
      break;
    case "openai.embeddings":
      members.push([key("input"), lit(rng.weighted<unknown>([[5, text(rng)], [1, [text(rng), text(rng)]], [1, [7, 8, 9]]]))]);
      break;
  }
  if (shape !== "openai.embeddings" && rng.chance(0.2)) {
    members.push([key("stream"), lit(true)]);
    if (shape !== "anthropic.messages" && rng.chance(0.5)) members.push([key("stream_options"), lit({ include_usage: true })]);
  }
  if (rng.chance(0.2)) members.push([key("temperature"), lit(0.5)]);
  if (rng.chance(0.1)) members.push([key("metadata"), lit({ user: text(rng, 2) })]);
  for (let i = members.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [members[i], members[j]] = [members[j], members[i]];
  }
  return members;
}

// ---------------------------------------------------------------- one thing wrong

const WRONG_VALUES = ["null", "true", "false", "0", "-1", "1.5", "1e3", '"x"', '""', "[]", "{}", "[1]", "[null]", '{"a":1}', "[[]]", '"4096"', '[{"text":1}]'];

/** Number literals for an output budget: the ones parsers disagree on, and the ones that are not JSON. */
export const NUMBER_LITERALS = [
  "0", "-0", "1", "4096", "4097", "100.0", "1e2", "1E2", "1e+2", "-1", "9007199254740993", "9007199254740992", "1000000000000001",
  "1e400", "-1e400", "1" + "0".repeat(30), "1" + "0".repeat(400), "00", "01", "1.", ".5", "+1", "0x10", "NaN", "Infinity", "-Infinity",
  "1_000", "4096e-0", "0.0", "-", "1e", "2e0",
];

/** Every field some filter reads, with a path into the request members it lives under. */
const READ_FIELDS = [
  "model", "max_tokens", "max_completion_tokens", "stream", "stream_options", "stream_options.include_usage", "messages", "messages[]",
  "messages[].content", "messages[].content[]", "messages[].content[].text", "system", "prompt", "prompt[]", "input", "input[][]", "tools",
] as const;
type ReadField = (typeof READ_FIELDS)[number];

function wrongTypeMember(rng: Rng, field: ReadField, value: string): Member {
  const part = (v: string) => `{"type":"text","text":${v}}`;
  switch (field) {
    case "stream_options.include_usage": return [key("stream_options"), `{"include_usage":${value}}`];
    case "messages[]": return [key("messages"), `[${value}]`];
    case "messages[].content": return [key("messages"), `[{"role":"user","content":${value}}]`];
    case "messages[].content[]": return [key("messages"), `[{"role":"user","content":[${value}]}]`];
    case "messages[].content[].text": return [key("messages"), `[{"role":"user","content":[${part(value)}]}]`];
    case "prompt[]": return [key("prompt"), `[${value}]`];
    case "input[][]": return [key("input"), `[[1,${value}]]`];
    default: return [key(field), value];
  }
}

function topName(field: ReadField): string {
  return field.replace(/[.[].*$/, "");
}

/** Replaces (or adds) the member for `field`. */
function withMember(members: Member[], field: ReadField, member: Member): Member[] {
  const name = key(topName(field));
  const out = members.filter(([k]) => k !== name);
  out.splice(Math.min(out.length, 1), 0, member);
  return out;
}

/** Valid UTF-8 never holds these: stray continuations, overlongs, encoded surrogates, past U+10FFFF, cut sequences. */
const BAD_UTF8 = [[0x80], [0xbf], [0xc0, 0xaf], [0xc1, 0xbf], [0xe0, 0x80, 0xaf], [0xed, 0xa0, 0x80], [0xed, 0xbf, 0xbf], [0xf4, 0x90, 0x80, 0x80], [0xf5, 0x80, 0x80, 0x80], [0xff], [0xfe], [0xe2, 0x82], [0xc3], [0xf0, 0x9f, 0x98]];

/** Escapes that are valid JSON but read differently by lenient and strict decoders, or not valid at all. */
export const ESCAPES = ["\\ud800", "\\udc00", "\\ud800\\u0041", "\\udbff\\udfff", "\\ud83d\\ude00", "\\u0000", "\\u00", "\\x41", "\\'", "\\U0041", "\\uD834", "\\/", "\\u12G4", "\\"];

export interface Body {
  bytes: Buffer;
  /** What was done to it, for counting and for failure reports. */
  kind: string;
}

export function wellFormed(rng: Rng, shape: Shape): Body {
  const members = requestMembers(rng, shape);
  if (rng.chance(0.1)) {
    // The same members pretty-printed: JSON whitespace in every place it may go.
    const pretty = JSON.stringify(JSON.parse(objectText(members)), null, rng.pick<string | number>([1, "\t", " \r\n "]));
    return { bytes: Buffer.from(pretty), kind: "valid-pretty" };
  }
  return { bytes: Buffer.from(objectText(members)), kind: "valid" };
}

/** One adversarial body for `shape`, from one of several families. */
export function adversarial(rng: Rng, shape: Shape): Body {
  const family = rng.weighted<string>([
    [10, "wrong-type"], [8, "mutation"], [6, "duplicate-key"], [5, "escaped-key"], [5, "model-escape"], [5, "number"], [4, "bad-utf8"],
    [3, "nesting"], [2, "top-level"], [2, "huge-string"], [1, "huge-number"], [2, "bom"], [2, "lenient-syntax"],
  ]);
  const members = requestMembers(rng, shape);
  const raw = (text: string, kind = family): Body => ({ bytes: Buffer.from(text), kind });
  switch (family) {
    case "wrong-type": {
      const field = rng.pick(READ_FIELDS);
      return raw(objectText(withMember(members, field, wrongTypeMember(rng, field, rng.pick(WRONG_VALUES)))), `wrong-type:${field}`);
    }
    case "duplicate-key": {
      const field = rng.pick(["model", "max_tokens", "max_completion_tokens", "stream", "messages", "system", "prompt", "input", "tools", "stream_options"]);
      const first = field === "model" ? lit(rng.pick(ALLOWED_MODELS)) : field.startsWith("max") ? lit(budget(rng)) : rng.pick(WRONG_VALUES);
      const second = field === "model" ? lit(rng.pick([...OTHER_MODELS, ...ALLOWED_MODELS])) : field.startsWith("max") ? lit(rng.range(1, 1e6)) : rng.pick(WRONG_VALUES);
      const out: Member[] = [[key(field), first], ...members, [rng.chance(0.5) ? escapedLiteral(rng, field) : key(field), second]];
      if (rng.chance(0.3)) {
        // The duplicate one level down: a message's content, a part's text.
        const inner = rng.chance(0.5)
          ? `[{"role":"user","content":"short","content":${lit(text(rng, 40))}}]`
          : `[{"role":"user","content":[{"type":"text","text":"short","text":${lit(text(rng, 40))}}]}]`;
        return raw(objectText([...members.filter(([k]) => k !== key("messages")), [key("messages"), inner]]), "duplicate-key:nested");
      }
      return raw(objectText(out), `duplicate-key:${field}`);
    }
    case "escaped-key": {
      const out = members.map(([k, v]): Member => (rng.chance(0.5) ? [escapedLiteral(rng, JSON.parse(k)), v] : [k, v]));
      return raw(objectText(out));
    }
    case "model-escape": {
      const base = rng.pick(ALLOWED_MODELS);
      const at = rng.int(base.length + 1);
      const value = `"${base.slice(0, at)}${rng.pick(ESCAPES)}${base.slice(at)}"`;
      return raw(objectText(withMember(members, "model", [key("model"), value])));
    }
    case "number": {
      const field = rng.pick(["max_tokens", "max_completion_tokens"] as const);
      return raw(objectText(withMember(members, field, [key(field), rng.pick(NUMBER_LITERALS)])));
    }
    case "bad-utf8": {
      const text = Buffer.from(objectText(members));
      const quotes = [...text.keys()].filter((i) => text[i] === 0x22);
      const at = quotes.length ? rng.pick(quotes) + 1 : rng.int(text.length);
      return { bytes: Buffer.concat([text.subarray(0, at), Buffer.from(rng.pick(BAD_UTF8)), text.subarray(at)]), kind: family };
    }
    case "nesting": {
      const depth = rng.weighted([[3, rng.range(2, 70)], [2, rng.range(60, 1000)], [1, rng.range(1000, 20000)]]);
      const open = rng.chance(0.5) ? "[" : '{"a":';
      const close = open === "[" ? "]" : "}";
      const balanced = rng.chance(0.9);
      const deep = open.repeat(depth) + "1" + close.repeat(balanced ? depth : rng.int(depth));
      const field = rng.pick(["model", "messages", "tools", "metadata", "input", "prompt", "stream_options"]);
      return raw(objectText([...members.filter(([k]) => k !== key(field)), [key(field), deep]]), `nesting:${field}`);
    }
    case "top-level":
      return raw(rng.pick(["", " ", "\r\n", "null", "[]", "1", '"model"', "{}", "{", "}", "{}{}", "{} x", "[{}]", "true", '{"model":"gpt-4o"', '{"model"}', "\u0000"]));
    case "huge-string": {
      const size = rng.pick([20_000, 70_000, 300_000, 1_100_000]);
      const field = rng.pick(["model", "content", "text-part", "metadata", "tools"]);
      const big = lit(rng.chance(0.5) ? "a".repeat(size) : "é mesh ".repeat(Math.ceil(size / 8)).slice(0, size));
      if (field === "content") return raw(objectText(withMember(members, "messages", [key("messages"), `[{"role":"user","content":${big}}]`])), `huge-string:${field}`);
      if (field === "text-part") return raw(objectText(withMember(members, "prompt", [key(shape === "openai.embeddings" ? "input" : "prompt"), big])), `huge-string:${field}`);
      return raw(objectText([...members.filter(([k]) => k !== key(field)), [key(field), big]]), `huge-string:${field}`);
    }
    case "huge-number": {
      const digits = "9".repeat(rng.pick([20, 400, 5000, 50_000]));
      return raw(objectText(withMember(members, "max_tokens", [key("max_tokens"), rng.chance(0.5) ? digits : `1e${digits}`])));
    }
    case "bom":
      return { bytes: Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(objectText(members))]), kind: family };
    case "lenient-syntax": {
      const text = objectText(members);
      return raw(rng.pick([
        text.replace(/"/g, "'"),
        text.replace(/}$/, ",}"),
        text.replace(/^\{/, "{/* c */"),
        text.replace(/^\{/, "{\u00a0"),
        text.replace(/"model"/, "model"),
        text.replace(/:true/g, ":True"),
        `${text}\n// trailing`,
        text.replace(/,/, ",,"),
      ]));
    }
    default: {
      const bytes = Buffer.from(objectText(members));
      return { bytes: mutate(rng, bytes), kind: "mutation" };
    }
  }
}

/** A few random byte-level edits: truncation, replacement, insertion, deletion, a repeated slice. */
export function mutate(rng: Rng, input: Buffer): Buffer {
  let bytes = input;
  for (let n = rng.range(1, 3); n > 0; n--) {
    const at = rng.int(bytes.length + 1);
    switch (rng.int(5)) {
      case 0:
        bytes = bytes.subarray(0, at);
        break;
      case 1:
        if (at < bytes.length) {
          bytes = Buffer.from(bytes);
          bytes[at] = rng.chance(0.5) ? rng.int(256) : rng.pick([0x22, 0x5c, 0x7b, 0x7d, 0x5b, 0x5d, 0x2c, 0x3a, 0x00]);
        }
        break;
      case 2:
        bytes = Buffer.concat([bytes.subarray(0, at), Buffer.from([rng.int(256)]), bytes.subarray(at)]);
        break;
      case 3:
        bytes = Buffer.concat([bytes.subarray(0, at), bytes.subarray(at + 1)]);
        break;
      default: {
        const end = Math.min(bytes.length, at + rng.range(1, 20));
        bytes = Buffer.concat([bytes.subarray(0, end), bytes.subarray(at, end), bytes.subarray(end)]);
      }
    }
  }
  return bytes;
}
