// The throttle's config as its specs read it: the parse error, or the parsed config of a text that
// must parse.
import { parseThrottleConfig, ThrottleConfig } from "../throttle/config";

export function errorOf(text: string): string {
  return parseThrottleConfig(text).error;
}

export function configOf(text: string): ThrottleConfig {
  const result = parseThrottleConfig(text);
  expect(result.error).toBe("");
  return result.config!;
}
