// Measures the prompt-token estimator (assembly/llm/tokens.ts, run as compiled to
// build/kernels.wasm) against gpt-tokenizer's real o200k and cl100k encodings, over real text that
// installed packages ship (tooling/corpus.ts). Prints a table per family, plain and as Markdown for
// docs/token-estimation.md, and fails when the estimator drifts: median absolute error over 10%, or any sample
// under-estimated by more than 15% (an under-estimate lets an oversized prompt through admission).
import { encode as encodeCl100k } from "gpt-tokenizer/encoding/cl100k_base";
import { encode as encodeO200k } from "gpt-tokenizer/encoding/o200k_base";
import assert from "node:assert/strict";
import { before, describe, test } from "node:test";
import { type Category, loadCorpus, type Sample } from "../tooling/corpus.ts";
import { ensureKernelsBuilt, type Family, type Kernels, loadKernels } from "../tooling/kernels.ts";

const MAX_MEDIAN_ERROR = 0.1;
const MAX_UNDER_ESTIMATE = 0.15;
const MIN_SAMPLES_PER_CATEGORY = 36;

// Text that spells a special token ("<|endoftext|>") is plain text to an API: encode it as such.
const AS_TEXT = { disallowedSpecial: new Set<string>() };
const ENCODERS: Record<Family, (text: string) => number[]> = {
  o200k: (text) => encodeO200k(text, AS_TEXT),
  cl100k: (text) => encodeCl100k(text, AS_TEXT),
};

interface Measured {
  sample: Sample;
  actual: number;
  estimate: number;
  /** estimate / actual - 1: negative is an under-estimate. */
  error: number;
}

interface Row {
  label: string;
  samples: number;
  medianAbs: number;
  p90Abs: number;
  worstUnder: number;
  worstOver: number;
}

/** Nearest-rank percentile of sorted values. */
function percentile(sorted: number[], p: number): number {
  return sorted[Math.max(0, Math.ceil(p * sorted.length) - 1)];
}

function summarize(label: string, measured: Measured[]): Row {
  const abs = measured.map((m) => Math.abs(m.error)).sort((a, b) => a - b);
  const errors = measured.map((m) => m.error);
  return {
    label,
    samples: measured.length,
    medianAbs: percentile(abs, 0.5),
    p90Abs: percentile(abs, 0.9),
    worstUnder: Math.min(0, ...errors),
    worstOver: Math.max(0, ...errors),
  };
}

const pct = (x: number, signed = false) => `${signed && x > 0 ? "+" : ""}${(x * 100).toFixed(1)}%`;
const cells = (r: Row) => [r.label, String(r.samples), pct(r.medianAbs), pct(r.p90Abs), pct(r.worstUnder, true), pct(r.worstOver, true)];
const HEADERS = ["category", "samples", "median abs. error", "p90 abs. error", "worst under", "worst over"];

function plainTable(rows: Row[]): string {
  const table = [HEADERS, ...rows.map(cells)];
  const widths = HEADERS.map((_, i) => Math.max(...table.map((line) => line[i].length)));
  return table.map((line) => line.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]) : cell.padStart(widths[i]))).join("  ")).join("\n");
}

function markdownTable(rows: Row[]): string {
  const lines = [`| ${HEADERS.join(" | ")} |`, `|${HEADERS.map((_, i) => (i === 0 ? " --- " : " ---: ")).join("|")}|`];
  for (const r of rows) lines.push(`| ${cells(r).join(" | ")} |`);
  return lines.join("\n");
}

describe("prompt-token estimator accuracy", () => {
  let kernels: Kernels;
  let samples: Sample[];

  before(async () => {
    ensureKernelsBuilt();
    kernels = await loadKernels();
    samples = loadCorpus();
  });

  test("the corpus has enough samples of every kind", () => {
    const counts = new Map<Category, number>();
    for (const s of samples) counts.set(s.category, (counts.get(s.category) ?? 0) + 1);
    for (const category of ["prose", "code", "json", "non-latin", "latin-other"] as Category[]) {
      assert.ok((counts.get(category) ?? 0) >= MIN_SAMPLES_PER_CATEGORY, `only ${counts.get(category) ?? 0} ${category} samples`);
    }
  });

  for (const family of ["o200k", "cl100k"] as Family[]) {
    test(`estimates stay close to ${family}`, () => {
      const measured: Measured[] = samples.map((sample) => {
        const actual = ENCODERS[family](sample.text).length;
        const estimate = kernels.estimateTokens(sample.text, family);
        return { sample, actual, estimate, error: estimate / actual - 1 };
      });
      const categories = [...new Set(samples.map((s) => s.category))];
      const rows = [
        ...categories.map((c) => summarize(c, measured.filter((m) => m.sample.category === c))),
        summarize("overall", measured),
      ];
      const worst = [...measured].sort((a, b) => a.error - b.error);
      const describeSample = (m: Measured) => `  ${pct(m.error, true).padStart(7)}  ${m.estimate} for ${m.actual}  ${m.sample.source}`;
      console.log(
        [
          "",
          `Estimator vs ${family}_base (gpt-tokenizer), ${measured.length} samples:`,
          plainTable(rows),
          "Largest under-estimates:",
          ...worst.slice(0, 3).map(describeSample),
          "Largest over-estimates:",
          ...worst.slice(-3).reverse().map(describeSample),
          "",
          `Markdown (${family}):`,
          markdownTable(rows),
          "",
        ].join("\n"),
      );

      const overall = rows[rows.length - 1];
      assert.ok(overall.medianAbs <= MAX_MEDIAN_ERROR, `${family}: median absolute error ${pct(overall.medianAbs)} is over ${pct(MAX_MEDIAN_ERROR)}`);
      const under = measured.filter((m) => m.error < -MAX_UNDER_ESTIMATE);
      assert.deepEqual(under.map(describeSample), [], `${family}: samples under-estimated by more than ${pct(MAX_UNDER_ESTIMATE)}`);
    });
  }
});
