// The hot pure code of llm-mesh compiled for Node (built with asconfig.kernels.json: no WASI, no
// proxy-wasm SDK), so that tests and benchmarks measure the very code the filters run. Callers put
// their input into inputBuffer() and pass pointer and length to a kernel.
import { estimateUtf8At, TokenizerFamily } from "../llm/tokens";

// Built with the filters' runtime, so its collector runs only when called: the loader
// (tooling/kernels.ts) calls this after every kernel, as abi.ts does after every callback.
export { collectWhenDue } from "../host/collector";

// ArrayBuffer's largest payload in the AssemblyScript runtime.
const MAX_INPUT: i32 = (1 << 30) - 16;

let input: ArrayBuffer = new ArrayBuffer(0);

/**
 * A buffer of at least `size` bytes for kernel input, reused across calls so that nothing leaks;
 * 0 when `size` is out of range. Memory may grow here: views over it must be taken afterwards.
 */
export function inputBuffer(size: i32): usize {
  if (size < 0 || size > MAX_INPUT) return 0;
  if (size > input.byteLength) {
    const grown = <i64>input.byteLength * 2;
    input = new ArrayBuffer(grown > <i64>size && grown <= <i64>MAX_INPUT ? <i32>grown : size);
  }
  return changetype<usize>(input);
}

/** Estimated prompt tokens of `len` UTF-8 bytes at `ptr`; family 0 = o200k, 1 = cl100k; -1 on bad arguments. */
export function estimateTokens(ptr: usize, len: i32, family: i32): i32 {
  if (len < 0 || <u64>ptr + <u64>len > (<u64>memory.size() << 16)) return -1;
  if (family != TokenizerFamily.O200K && family != TokenizerFamily.CL100K) return -1;
  return estimateUtf8At(ptr, len, <TokenizerFamily>family);
}

// Appended for the benchmark (scripts/bench/kernels.ts): the admission filter's whole body scan, so
// its speed in V8 can be told apart from Envoy's cost of calling into Wasm.
import { API_SHAPE_NAMES, readLlmRequest } from "../llm/request";
import { TokenEstimator } from "../llm/tokens";

const scanEstimator = new TokenEstimator(TokenizerFamily.O200K);

/**
 * Reads the `len` bytes at `ptr` (which must lie in inputBuffer()) as a request body of API `shape`
 * (an ApiShape) with readLlmRequest; its estimated prompt tokens, or -1 for bad arguments or a body
 * that is not a well-formed request.
 */
export function scanRequest(ptr: usize, len: i32, shape: i32): i32 {
  const start = changetype<usize>(input);
  if (len < 0 || ptr < start || <u64>ptr + <u64>len > <u64>start + <u64>input.byteLength) return -1;
  if (shape <= 0 || shape >= API_SHAPE_NAMES.length) return -1;
  const body = Uint8Array.wrap(input, <i32>(ptr - start), len);
  const request = readLlmRequest(body, shape, scanEstimator);
  return request.ok ? request.promptTokens : -1;
}

// Appended for the configuration schemas (tooling/config-check.ts): each filter's own config
// parser, so that test/schemas.test.ts can hold it to the JSON Schema published in schemas/ with
// the same fixtures. A check takes UTF-8 config text in inputBuffer() and returns 0 when the
// filter accepts it, -1 for bad arguments, or else the UTF-8 length of the filter's error message,
// which stays at configErrorPointer() until the next check.
import { parseAdmissionConfig } from "../admission/config";
import { parseMetricsConfig } from "../metrics/config";
import { parseRouterConfig } from "../router/config";
import { parseThrottleConfig } from "../throttle/config";

let configError: ArrayBuffer = new ArrayBuffer(0);

function inputText(ptr: usize, len: i32): string | null {
  const start = changetype<usize>(input);
  if (len < 0 || ptr < start || <u64>ptr + <u64>len > <u64>start + <u64>input.byteLength) return null;
  return String.UTF8.decodeUnsafe(ptr, <usize>len);
}

function configVerdict(accepted: bool, error: string): i32 {
  if (accepted) return 0;
  configError = String.UTF8.encode(error);
  return configError.byteLength;
}

export function configErrorPointer(): usize {
  return changetype<usize>(configError);
}

export function checkAdmissionConfig(ptr: usize, len: i32): i32 {
  const text = inputText(ptr, len);
  if (text == null) return -1;
  const result = parseAdmissionConfig(text);
  return configVerdict(result.config != null, result.error);
}

export function checkThrottleConfig(ptr: usize, len: i32): i32 {
  const text = inputText(ptr, len);
  if (text == null) return -1;
  const result = parseThrottleConfig(text);
  return configVerdict(result.config != null, result.error);
}

export function checkMetricsConfig(ptr: usize, len: i32): i32 {
  const text = inputText(ptr, len);
  if (text == null) return -1;
  const result = parseMetricsConfig(text);
  return configVerdict(result.config != null, result.error);
}

export function checkRouterConfig(ptr: usize, len: i32): i32 {
  const text = inputText(ptr, len);
  if (text == null) return -1;
  const result = parseRouterConfig(text);
  return configVerdict(result.config != null, result.error);
}

// Appended for the parser differential (test/differential.test.ts): what readLlmRequest makes of a
// body, so that it can be held against the JSON parsers model servers use. readRequest takes the
// body in inputBuffer() and returns the UTF-8 length of a JSON object
// {"ok","error","model","hasModel","maxTokens","stream","messages","promptTokens"} that stays at
// readResultPointer() until the next call, or -1 for bad arguments.
import { JsonObjectWriter } from "../json/writer";

const readEstimator = new TokenEstimator(TokenizerFamily.O200K);
let readResult: ArrayBuffer = new ArrayBuffer(0);

export function readResultPointer(): usize {
  return changetype<usize>(readResult);
}

export function readRequest(ptr: usize, len: i32, shape: i32): i32 {
  const start = changetype<usize>(input);
  if (len < 0 || ptr < start || <u64>ptr + <u64>len > <u64>start + <u64>input.byteLength) return -1;
  if (shape <= 0 || shape >= API_SHAPE_NAMES.length) return -1;
  const request = readLlmRequest(Uint8Array.wrap(input, <i32>(ptr - start), len), shape, readEstimator);
  const out = new JsonObjectWriter()
    .bool("ok", request.ok)
    .string("error", request.error)
    .string("model", request.model)
    .bool("hasModel", request.hasModel)
    .int("maxTokens", request.maxTokens)
    .bool("stream", request.stream)
    .int("messages", request.messages)
    .int("promptTokens", request.promptTokens);
  readResult = String.UTF8.encode(out.toString());
  return readResult.byteLength;
}

/**
 * Estimated tokens of several texts read as separate strings, the way readLlmRequest feeds message
 * texts to its estimator: the input is a sequence of (u32 little-endian byte length, UTF-8 bytes).
 * -1 when the sequence does not fit the input.
 */
export function estimateTexts(ptr: usize, len: i32): i32 {
  const start = changetype<usize>(input);
  if (len < 0 || ptr < start || <u64>ptr + <u64>len > <u64>start + <u64>input.byteLength) return -1;
  readEstimator.reset();
  let at: i32 = 0;
  while (at < len) {
    if (len - at < 4) return -1;
    const size = load<i32>(ptr + <usize>at);
    at += 4;
    if (size < 0 || size > len - at) return -1;
    readEstimator.addUtf8At(ptr + <usize>at, size);
    readEstimator.endText();
    at += size;
  }
  return readEstimator.tokens();
}

// Appended for the benchmark (scripts/bench/kernels.ts): the usage tracker that the throttle and
// metrics filters run over every byte of an answer, so its speed in V8 is measured like the scan.
import { UsageTracker } from "../llm/usage-tracker";

/**
 * Follows the `len` bytes at `ptr` (which must lie in inputBuffer()) as a response body, one JSON
 * document or (`stream` != 0) an SSE stream, handed over in chunks of `chunk` bytes (0: all at
 * once) as Envoy hands a body to a filter; the completion tokens it counts, or -1 for bad arguments.
 */
export function trackUsage(ptr: usize, len: i32, stream: i32, chunk: i32): i32 {
  const start = changetype<usize>(input);
  if (len < 0 || chunk < 0 || ptr < start || <u64>ptr + <u64>len > <u64>start + <u64>input.byteLength) return -1;
  const tracker = new UsageTracker(stream != 0);
  const step = chunk > 0 ? chunk : max(len, 1);
  for (let at = 0; at < len; at += step) tracker.onChunkAt(ptr + <usize>at, min(step, len - at), 0);
  tracker.finish();
  return <i32>min<i64>(tracker.completionTokens, i32.MAX_VALUE);
}
