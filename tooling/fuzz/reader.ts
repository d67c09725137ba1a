// readLlmRequest (assembly/llm/request.ts) run from Node through the readRequest and
// estimateTexts exports of build/kernels.wasm: the very reader the filters use, for the parser
// differential and for checking what the fuzzed upstream received.
import { readFileSync } from "node:fs";
import { ensureKernelsBuilt, kernelsWasm } from "../kernels.ts";

export type Shape = "openai.chat" | "openai.completions" | "openai.embeddings" | "anthropic.messages";
const SHAPE_IDS: Record<Shape, number> = { "openai.chat": 1, "openai.completions": 2, "openai.embeddings": 3, "anthropic.messages": 4 };

export interface Reading {
  ok: boolean;
  error: string;
  model: string;
  hasModel: boolean;
  /** The larger of max_tokens and max_completion_tokens, saturated at 1e15; -1 when neither is set. */
  maxTokens: number;
  stream: boolean;
  messages: number;
  promptTokens: number;
}

export interface RequestReader {
  read(body: Uint8Array, shape: Shape): Reading;
  /** The estimate for texts read one string at a time, as the reader feeds message contents. */
  estimateTexts(texts: string[]): number;
}

interface Exports {
  memory: WebAssembly.Memory;
  inputBuffer(size: number): number;
  readRequest(ptr: number, len: number, shape: number): number;
  readResultPointer(): number;
  estimateTexts(ptr: number, len: number): number;
}

export async function loadRequestReader(): Promise<RequestReader> {
  ensureKernelsBuilt();
  const { instance } = await WebAssembly.instantiate(readFileSync(kernelsWasm), {
    env: {
      abort(): never {
        throw new Error("kernels.wasm aborted: readLlmRequest trapped (the filter would fail the stream)");
      },
    },
  });
  const exports = instance.exports as unknown as Exports;
  if (typeof exports.readRequest !== "function") throw new Error("build/kernels.wasm has no readRequest export: rebuild it");
  const encoder = new TextEncoder();
  const decoder = new TextDecoder();
  const put = (bytes: Uint8Array): number => {
    const ptr = exports.inputBuffer(bytes.length);
    if (ptr === 0 && bytes.length > 0) throw new Error(`input of ${bytes.length} bytes is too large`);
    new Uint8Array(exports.memory.buffer, ptr, bytes.length).set(bytes);
    return ptr;
  };
  return {
    read(body, shape) {
      const length = exports.readRequest(put(body), body.length, SHAPE_IDS[shape]);
      if (length < 0) throw new Error("readRequest rejected its arguments");
      const at = exports.readResultPointer();
      return JSON.parse(decoder.decode(new Uint8Array(exports.memory.buffer, at, length))) as Reading;
    },
    estimateTexts(texts) {
      const parts = texts.map((t) => encoder.encode(t));
      const packed = new Uint8Array(parts.reduce((n, p) => n + 4 + p.length, 0));
      const view = new DataView(packed.buffer);
      let at = 0;
      for (const part of parts) {
        view.setUint32(at, part.length, true);
        packed.set(part, at + 4);
        at += 4 + part.length;
      }
      const tokens = exports.estimateTexts(put(packed), packed.length);
      if (tokens < 0) throw new Error("estimateTexts rejected its input");
      return tokens;
    },
  };
}
