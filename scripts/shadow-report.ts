// Side-by-side report of shadow traffic: reads the comparison records llm-router writes on the side
// that served each request and on the shadow side (from Envoy JSON access logs with a `record`
// field, or from Envoy logs with `record.log` on), pairs them by request id and prints latency,
// tokens, cost per request and how often the two answers agree. The question it answers is the
// seed's: could the shadow model (say, a smaller one) replace the one serving today?
//
//   npx tsx scripts/shadow-report.ts [--price MODEL=IN,OUT]... [--prices FILE] [--examples N] [--json] LOG...
//
// Prices are USD per million tokens (input, output); MODEL may end in * for a prefix. A prices
// file is a JSON object {"gpt-4o": {"input": 2.5, "output": 10}, ...}.
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** One side of one request, as assembly/router/record.ts writes it. */
export interface ComparisonRecord {
  id: string;
  side: string;
  model: string;
  upstream_model?: string;
  response_model?: string;
  status: number;
  latency_ms: number;
  prompt_tokens?: number;
  completion_tokens?: number;
  usage?: "reported" | "estimated";
  bytes?: number;
  answer_hash?: string;
  answer_chars?: number;
  preview?: string;
}

export interface Price {
  input: number;
  output: number;
}

export type Prices = Record<string, Price>;

export interface SideSummary {
  side: string;
  models: string[];
  requests: number;
  errors: number;
  latencyMeanMs: number;
  latencyP50Ms: number;
  latencyP95Ms: number;
  promptTokensPerRequest: number | null;
  completionTokensPerRequest: number | null;
  /** USD; null when a request's model has no price or its tokens are unknown. */
  costPerRequest: number | null;
  totalCost: number | null;
  unpricedModels: string[];
}

export interface Disagreement {
  id: string;
  served: AnswerGlimpse;
  shadow: AnswerGlimpse;
}

/** What a record keeps of an answer: its length and first characters. */
export interface AnswerGlimpse {
  chars: number | null;
  completionTokens: number | null;
  preview: string;
}

export interface Report {
  pairs: number;
  servedOnly: number;
  shadowOnly: number;
  served: SideSummary;
  shadow: SideSummary;
  /** Pairs where both sides answered 2xx with an answer to compare. */
  compared: number;
  agreed: number;
  agreementRate: number | null;
  /** Shadow cost over served cost, when both are known. */
  costRatio: number | null;
  disagreements: Disagreement[];
}

const RECORD_LINE = /llm-router\[\d+\]: record (\{.*\})\s*$/;

function isRecord(value: unknown): value is ComparisonRecord {
  if (!value || typeof value !== "object") return false;
  const r = value as Record<string, unknown>;
  return typeof r.id === "string" && typeof r.side === "string" && typeof r.status === "number" && typeof r.latency_ms === "number";
}

function parseMaybe(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/**
 * The record a log line carries: an access-log entry's `record` field (text or object), at the top
 * (envoy/router.yaml) or under `llm` (envoy/demo.yaml, which groups the llm-mesh fields), or a log line.
 */
export function recordOfLine(line: string): ComparisonRecord | undefined {
  const trimmed = line.trim();
  if (!trimmed) return undefined;
  if (trimmed.startsWith("{")) {
    const entry = parseMaybe(trimmed);
    if (isRecord(entry)) return entry;
    if (entry && typeof entry === "object") {
      const fields = entry as Record<string, unknown>;
      const llm = fields.llm && typeof fields.llm === "object" ? (fields.llm as Record<string, unknown>) : {};
      const field = fields.record ?? llm.record;
      const value = typeof field === "string" ? parseMaybe(field) : field;
      if (isRecord(value)) return value;
    }
  }
  const match = RECORD_LINE.exec(trimmed);
  if (match) {
    const value = parseMaybe(match[1]);
    if (isRecord(value)) return value;
  }
  return undefined;
}

/** Every record in the texts; one request side logged twice (access log and log line) counts once. */
export function readRecords(texts: string[]): ComparisonRecord[] {
  const seen = new Set<string>();
  const out: ComparisonRecord[] = [];
  for (const text of texts) {
    for (const line of text.split("\n")) {
      const record = recordOfLine(line);
      if (!record || !record.id) continue;
      const key = `${record.id}\u0000${record.side}`;
      if (seen.has(key)) continue;
      seen.add(key);
      out.push(record);
    }
  }
  return out;
}

/** The model that answered: what the server says, else what was sent to it. */
export const answeredModel = (r: ComparisonRecord) => r.response_model || r.upstream_model || r.model;

export function priceFor(prices: Prices, model: string): Price | undefined {
  if (prices[model]) return prices[model];
  let best: [number, Price] | undefined;
  for (const [pattern, price] of Object.entries(prices)) {
    if (!pattern.endsWith("*")) continue;
    const prefix = pattern.slice(0, -1);
    if (model.startsWith(prefix) && (!best || prefix.length > best[0])) best = [prefix.length, price];
  }
  return best?.[1];
}

function costOf(record: ComparisonRecord, prices: Prices): number | undefined {
  const price = priceFor(prices, answeredModel(record));
  if (!price || record.prompt_tokens === undefined || record.completion_tokens === undefined) return undefined;
  return (record.prompt_tokens * price.input + record.completion_tokens * price.output) / 1_000_000;
}

function percentile(sorted: number[], p: number): number {
  if (!sorted.length) return 0;
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[index];
}

const mean = (values: number[]) => (values.length ? values.reduce((a, b) => a + b, 0) / values.length : 0);
const ok = (r: ComparisonRecord) => r.status >= 200 && r.status < 300;

function summarize(side: string, records: ComparisonRecord[], prices: Prices): SideSummary {
  const latencies = records.map((r) => r.latency_ms).sort((a, b) => a - b);
  const withTokens = records.filter((r) => r.prompt_tokens !== undefined && r.completion_tokens !== undefined);
  const costs = records.map((r) => costOf(r, prices));
  const allPriced = records.length > 0 && costs.every((c) => c !== undefined);
  const total = allPriced ? (costs as number[]).reduce((a, b) => a + b, 0) : null;
  const models = [...new Set(records.map(answeredModel))].sort();
  return {
    side,
    models,
    requests: records.length,
    errors: records.filter((r) => !ok(r)).length,
    latencyMeanMs: mean(latencies),
    latencyP50Ms: percentile(latencies, 50),
    latencyP95Ms: percentile(latencies, 95),
    promptTokensPerRequest: withTokens.length ? mean(withTokens.map((r) => r.prompt_tokens!)) : null,
    completionTokensPerRequest: withTokens.length ? mean(withTokens.map((r) => r.completion_tokens!)) : null,
    costPerRequest: total !== null ? total / records.length : null,
    totalCost: total,
    unpricedModels: models.filter((m) => !priceFor(prices, m)),
  };
}

const glimpse = (r: ComparisonRecord): AnswerGlimpse => ({
  chars: r.answer_chars ?? null,
  completionTokens: r.completion_tokens ?? null,
  preview: r.preview ?? "",
});

export function buildReport(records: ComparisonRecord[], prices: Prices, examples = 3): Report {
  const served = new Map<string, ComparisonRecord>();
  const shadow = new Map<string, ComparisonRecord>();
  for (const r of records) {
    const into = r.side === "shadow" ? shadow : served;
    if (!into.has(r.id)) into.set(r.id, r);
  }
  const ids = [...served.keys()].filter((id) => shadow.has(id));
  const servedSide = ids.map((id) => served.get(id)!);
  const shadowSide = ids.map((id) => shadow.get(id)!);
  const servedSummary = summarize([...new Set(servedSide.map((r) => r.side))].sort().join("+") || "served", servedSide, prices);
  const shadowSummary = summarize("shadow", shadowSide, prices);

  let compared = 0;
  let agreed = 0;
  const disagreements: Disagreement[] = [];
  for (const id of ids) {
    const a = served.get(id)!;
    const b = shadow.get(id)!;
    if (!ok(a) || !ok(b) || !a.answer_hash || !b.answer_hash) continue;
    compared++;
    if (a.answer_hash === b.answer_hash) agreed++;
    else if (disagreements.length < examples) disagreements.push({ id, served: glimpse(a), shadow: glimpse(b) });
  }
  const servedCost = servedSummary.totalCost;
  const shadowCost = shadowSummary.totalCost;
  return {
    pairs: ids.length,
    servedOnly: served.size - ids.length,
    shadowOnly: shadow.size - ids.length,
    served: servedSummary,
    shadow: shadowSummary,
    compared,
    agreed,
    agreementRate: compared ? agreed / compared : null,
    costRatio: servedCost && shadowCost !== null ? shadowCost / servedCost : null,
    disagreements,
  };
}

const ms = (v: number) => `${Math.round(v)} ms`;
const num = (v: number | null) => (v === null ? "n/a" : v.toFixed(1));
const usd = (v: number | null) => (v === null ? "n/a" : `$${v < 0.01 ? v.toFixed(6) : v.toFixed(4)}`);
const pct = (v: number) => `${(v * 100).toFixed(1)}%`;

export function formatReport(report: Report): string {
  const { served, shadow } = report;
  const rows: [string, string, string][] = [
    ["", `served (${served.side})`, "shadow"],
    ["model", served.models.join(", ") || "-", shadow.models.join(", ") || "-"],
    ["requests", String(served.requests), String(shadow.requests)],
    ["errors", String(served.errors), String(shadow.errors)],
    ["latency mean", ms(served.latencyMeanMs), ms(shadow.latencyMeanMs)],
    ["latency p50 / p95", `${ms(served.latencyP50Ms)} / ${ms(served.latencyP95Ms)}`, `${ms(shadow.latencyP50Ms)} / ${ms(shadow.latencyP95Ms)}`],
    ["prompt tokens / request", num(served.promptTokensPerRequest), num(shadow.promptTokensPerRequest)],
    ["completion tokens / request", num(served.completionTokensPerRequest), num(shadow.completionTokensPerRequest)],
    ["cost / request", usd(served.costPerRequest), usd(shadow.costPerRequest)],
    ["total cost", usd(served.totalCost), usd(shadow.totalCost)],
  ];
  const widths = [0, 1, 2].map((c) => Math.max(...rows.map((r) => r[c].length)));
  const lines = [
    `Shadow comparison: ${report.pairs} requests seen on both sides` +
      ` (${report.servedOnly} served only, ${report.shadowOnly} shadow only)`,
    "",
    ...rows.map((r) => `  ${r[0].padEnd(widths[0])}   ${r[1].padEnd(widths[1])}   ${r[2]}`),
    "",
  ];
  lines.push(
    report.agreementRate === null
      ? "  answers agree: n/a (no pair where both sides answered 2xx)"
      : `  answers agree: ${report.agreed} of ${report.compared} (${pct(report.agreementRate)}), compared where both sides answered 2xx`,
  );
  if (report.costRatio !== null) lines.push(`  shadow cost:   ${pct(report.costRatio)} of the served cost`);
  const unpriced = [...new Set([...served.unpricedModels, ...shadow.unpricedModels])];
  if (unpriced.length) lines.push(`  no price for:  ${unpriced.join(", ")} (pass --price MODEL=IN,OUT in USD per million tokens)`);
  if (report.disagreements.length) {
    lines.push("", `Disagreements (first ${report.disagreements.length}):`);
    const show = (g: AnswerGlimpse) => `${g.completionTokens ?? "?"} tokens, ${g.chars ?? "?"} chars: ${JSON.stringify(g.preview)}`;
    for (const d of report.disagreements) {
      lines.push(`  ${d.id}`, `    served  ${show(d.served)}`, `    shadow  ${show(d.shadow)}`);
    }
  }
  return lines.join("\n");
}

function parsePrice(spec: string): [string, Price] {
  const m = /^([^=]+)=([0-9.]+),([0-9.]+)$/.exec(spec);
  if (!m) throw new Error(`--price ${spec}: expected MODEL=INPUT,OUTPUT (USD per million tokens)`);
  return [m[1], { input: Number(m[2]), output: Number(m[3]) }];
}

function readPrices(file: string): Prices {
  const value = JSON.parse(readFileSync(file, "utf8"));
  const prices: Prices = {};
  for (const [model, price] of Object.entries(value as Record<string, Price>)) {
    if (typeof price?.input !== "number" || typeof price?.output !== "number") {
      throw new Error(`${file}: ${model} needs numeric "input" and "output" (USD per million tokens)`);
    }
    prices[model] = price;
  }
  return prices;
}

function main(argv: string[]): number {
  const prices: Prices = {};
  const files: string[] = [];
  let json = false;
  let examples = 3;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--json") json = true;
    else if (arg === "--price") Object.assign(prices, Object.fromEntries([parsePrice(argv[++i] ?? "")]));
    else if (arg === "--prices") Object.assign(prices, readPrices(argv[++i] ?? ""));
    else if (arg === "--examples") examples = Number(argv[++i]);
    else if (arg === "-h" || arg === "--help") {
      console.log("usage: shadow-report.ts [--price MODEL=IN,OUT]... [--prices FILE] [--examples N] [--json] LOG...");
      return 0;
    } else files.push(arg);
  }
  if (!files.length) {
    console.error("shadow-report: name at least one log file (an Envoy JSON access log or an Envoy log)");
    return 2;
  }
  const records = readRecords(files.map((f) => readFileSync(f, "utf8")));
  const report = buildReport(records, prices, examples);
  console.log(json ? JSON.stringify(report, null, 2) : formatReport(report));
  return report.pairs > 0 ? 0 : 1;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    process.exitCode = main(process.argv.slice(2));
  } catch (err) {
    console.error(`shadow-report: ${(err as Error).message}`);
    process.exitCode = 2;
  }
}
