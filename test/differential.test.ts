// Parser differential: whenever the filters' request reader (readLlmRequest, run from
// build/kernels.wasm) accepts a body, the model server must read the same model, output budget and
// prompt text from it, whether it parses JSON with Python's json.loads (FastAPI, vLLM) or Node's
// JSON.parse; where they could differ, the reader must refuse the body. Otherwise a client could
// pass admission and throttling under one reading and be served under another.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { before, describe, test } from "node:test";
import { repoDir } from "../tooling/kernels.ts";
import { adversarial, ENDPOINTS, type Shape, wellFormed } from "../tooling/fuzz/bodies.ts";
import { loadRequestReader, type Reading, type RequestReader } from "../tooling/fuzz/reader.ts";
import { Rng } from "../tooling/fuzz/rng.ts";

const SEED = Number(process.env.FUZZ_SEED ?? 20240611);
const COUNT = Number(process.env.DIFFERENTIAL_COUNT ?? 30_000);
/** The reader saturates budgets here: any limit is far below, so larger values all mean "too many". */
const BUDGET_CEILING = 1e15;
const CHAT_SHAPES: Shape[] = ["openai.chat", "anthropic.messages"];

interface PythonReading {
  ok: boolean;
  error?: string;
  model?: string | null;
  modelType?: string;
  max_tokens?: [string, string] | null;
  max_completion_tokens?: [string, string] | null;
  texts?: string[];
  media?: number;
  messages?: number;
  token_ids?: number;
}

interface Case {
  name: string;
  shape: Shape;
  body: Buffer;
}

/** Runs test/fuzz/python_reading.py over all cases in one process. */
function pythonReadings(cases: Case[]): PythonReading[] {
  const input = cases.map((c) => JSON.stringify({ body: c.body.toString("base64"), shape: c.shape })).join("\n") + "\n";
  const run = spawnSync("python3", [join(repoDir, "test", "fuzz", "python_reading.py")], { input, maxBuffer: 1 << 30, encoding: "utf8" });
  if (run.status !== 0) throw new Error(`python3 failed (${run.status}): ${run.stderr}`);
  const lines = run.stdout.trimEnd().split("\n");
  assert.equal(lines.length, cases.length, "python answered every body");
  return lines.map((line) => JSON.parse(line));
}

/** The budget a server takes from one field, saturated like the reader's; undefined: not an integer. */
function pythonBudget(field: [string, string] | null | undefined): number | null | undefined {
  if (field == null) return null;
  if (field[0] !== "int") return undefined;
  if (field[1] === "huge") return BUDGET_CEILING;
  const value = BigInt(field[1]);
  return value > BigInt(BUDGET_CEILING) ? BUDGET_CEILING : Number(value);
}

function nodeReading(body: Buffer): { ok: true; value: any } | { ok: false } {
  try {
    // Express's body-parser and most Node servers: decode as UTF-8, then JSON.parse.
    return { ok: true, value: JSON.parse(body.toString("utf8")) };
  } catch {
    return { ok: false };
  }
}

/** How the accepted reading `ours` differs from the servers' (empty when it does not). */
function disagreements(reader: RequestReader, c: Case, ours: Reading, py: PythonReading): string[] {
  const out: string[] = [];
  if (!py.ok) return [`python refuses the body (${py.error}) but the reader accepts it`];
  const node = nodeReading(c.body);
  if (!node.ok || typeof node.value !== "object" || node.value === null || Array.isArray(node.value)) return ["JSON.parse refuses the body but the reader accepts it"];

  const pyModel = py.model ?? null;
  const ourModel = ours.hasModel ? ours.model : null;
  if (pyModel !== ourModel) out.push(`model: python ${JSON.stringify(pyModel)} (${py.modelType}), reader ${JSON.stringify(ourModel)}`);
  const nodeModel = typeof node.value.model === "string" ? node.value.model : null;
  if (nodeModel !== ourModel) out.push(`model: JSON.parse ${JSON.stringify(nodeModel)}, reader ${JSON.stringify(ourModel)}`);

  const budgets = [pythonBudget(py.max_tokens), pythonBudget(py.max_completion_tokens)];
  if (budgets.includes(undefined)) out.push(`budget: python reads a non-integer (${JSON.stringify([py.max_tokens, py.max_completion_tokens])}) the reader accepted`);
  const pyMax = Math.max(-1, ...budgets.filter((b): b is number => typeof b === "number"));
  if (pyMax !== ours.maxTokens) out.push(`budget: python ${pyMax}, reader ${ours.maxTokens}`);
  const nodeBudgets = [node.value.max_tokens, node.value.max_completion_tokens].filter((b) => b !== undefined && b !== null);
  const nodeMax = Math.max(-1, ...nodeBudgets.map((b) => (typeof b === "number" ? Math.min(b === 0 ? 0 : b, BUDGET_CEILING) : NaN)));
  if (nodeMax !== ours.maxTokens) out.push(`budget: JSON.parse ${nodeMax}, reader ${ours.maxTokens}`);

  // The prompt: the texts the server tokenizes, estimated the way the reader estimates them, plus
  // what it counts without text (message framing, images, token ids).
  let expected = reader.estimateTexts(py.texts ?? []) + (py.token_ids ?? 0) + (py.media ?? 0) * 765;
  if (CHAT_SHAPES.includes(c.shape)) expected += (py.messages ?? 0) * 4 + 3;
  if (expected !== ours.promptTokens) out.push(`prompt: python's texts estimate at ${expected}, the reader counted ${ours.promptTokens}`);
  return out;
}

function generated(count: number): Case[] {
  const rng = new Rng(SEED);
  const cases: Case[] = [];
  while (cases.length < count) {
    const { shape } = ENDPOINTS[cases.length % ENDPOINTS.length];
    const body = rng.chance(0.3) ? wellFormed(rng, shape) : adversarial(rng, shape);
    // Huge bodies test size limits, not parsing; they would only slow the pipe to python.
    if (body.bytes.length > 100_000) continue;
    cases.push({ name: `#${cases.length} ${body.kind}`, shape, body: body.bytes });
  }
  return cases;
}

const chat = (text: string): Case => ({ name: text, shape: "openai.chat", body: Buffer.from(text) });
const msgs = `"messages":[{"role":"user","content":"hi"}]`;

/** The classic tricks, each with the reader's expected answer: a reading, or a refusal. */
const TABLE: Array<{ c: Case; accept: boolean; model?: string; maxTokens?: number }> = [
  { c: chat(`{"model":"gpt-4o","model":"gpt-5",${msgs}}`), accept: false },
  { c: chat(`{"model":"gpt-4o","mod\\u0065l":"gpt-5",${msgs}}`), accept: false },
  { c: chat(`{"mod\\u0065l":"gpt-4o",${msgs}}`), accept: true, model: "gpt-4o" },
  { c: chat(`{"model":"gpt\\u002d4o",${msgs}}`), accept: true, model: "gpt-4o" },
  { c: chat(`{"model":"gpt-4o\\ud800",${msgs}}`), accept: false },
  { c: chat(`{"model":"gpt-4o\\udc00",${msgs}}`), accept: false },
  { c: chat(`{"model":"\\ud83d\\ude00",${msgs}}`), accept: true, model: "\u{1f600}" },
  { c: chat(`\ufeff{"model":"gpt-4o",${msgs}}`), accept: false },
  { c: chat(`{"model":"gpt-4o","max_tokens":NaN,${msgs}}`), accept: false },
  { c: chat(`{"model":"gpt-4o","max_tokens":Infinity,${msgs}}`), accept: false },
  { c: chat(`{"model":"gpt-4o","max_tokens":1e400,${msgs}}`), accept: false },
  { c: chat(`{"model":"gpt-4o","max_tokens":9007199254740993,${msgs}}`), accept: true, maxTokens: BUDGET_CEILING },
  { c: chat(`{"model":"gpt-4o","max_tokens":-0,${msgs}}`), accept: true, maxTokens: 0 },
  { c: chat(`{"model":"gpt-4o","max_tokens":100.0,${msgs}}`), accept: false },
  { c: chat(`{"model":"gpt-4o","max_tokens":10,"max_tokens":99999,${msgs}}`), accept: false },
  { c: chat(`{"model":"gpt-4o","max_tokens":10,"max_completion_tokens":9000,${msgs}}`), accept: true, maxTokens: 9000 },
  { c: chat(`{"model":"gpt-4o","messages":[{"role":"user","content":"a","content":"${"long ".repeat(500)}"}]}`), accept: false },
  { c: chat(`{"model":"gpt-4o","messages":[{"role":"user","content":[{"type":"text","text":"a","t\\u0065xt":"b"}]}]}`), accept: false },
  { c: chat(`{"model":"gpt-4o","metadata":${"[".repeat(64)}${"]".repeat(64)},${msgs}}`), accept: false },
  { c: chat(`{"model":"gpt-4o","metadata":${"[".repeat(62)}${"]".repeat(62)},${msgs}}`), accept: true, model: "gpt-4o" },
  { c: chat(`{"model":"gpt-4o",${msgs}}\u0000`), accept: false },
  { c: { name: "raw surrogate bytes", shape: "openai.chat", body: Buffer.concat([Buffer.from(`{"model":"gpt-4o","messages":[{"role":"user","content":"`), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from(`"}]}`)]) }, accept: false },
  { c: { name: "utf-16 body", shape: "openai.chat", body: Buffer.from(`{"model":"gpt-4o",${msgs}}`, "utf16le") }, accept: false },
];

describe("parser differential", () => {
  let reader: RequestReader;
  before(async () => (reader = await loadRequestReader()));

  test("the classic tricks: the reader reads what servers read, or refuses", () => {
    const python = pythonReadings(TABLE.map((t) => t.c));
    TABLE.forEach(({ c, accept, model, maxTokens }, i) => {
      const ours = reader.read(c.body, c.shape);
      assert.equal(ours.ok, accept, `${c.name}: reader ${ours.ok ? "accepts" : `refuses (${ours.error})`}`);
      if (!ours.ok) return;
      if (model !== undefined) assert.equal(ours.model, model, c.name);
      if (maxTokens !== undefined) assert.equal(ours.maxTokens, maxTokens, c.name);
      assert.deepEqual(disagreements(reader, c, ours, python[i]), [], c.name);
    });
  });

  test(`${COUNT} generated bodies: every accepted one reads the same in json.loads and JSON.parse`, { timeout: 300_000 }, () => {
    const cases = generated(COUNT);
    const python = pythonReadings(cases);
    const failures: string[] = [];
    const tally = { accepted: 0, refused: 0, pythonRefused: 0 };
    cases.forEach((c, i) => {
      const ours = reader.read(c.body, c.shape);
      if (!python[i].ok) tally.pythonRefused++;
      if (!ours.ok) {
        tally.refused++;
        return;
      }
      tally.accepted++;
      const found = disagreements(reader, c, ours, python[i]);
      if (found.length && failures.length < 15) failures.push(`${c.name} ${c.shape} ${JSON.stringify(c.body.toString("latin1").slice(0, 300))}\n    ${found.join("\n    ")}`);
    });
    console.log(`differential: ${cases.length} bodies, reader accepted ${tally.accepted}, refused ${tally.refused}; json.loads refused ${tally.pythonRefused}`);
    assert.deepEqual(failures, [], `the reader accepted bodies the servers read differently:\n  ${failures.join("\n  ")}`);
    assert.ok(tally.accepted > COUNT / 5 && tally.refused > COUNT / 5, "the generator exercises both sides");
  });
});
