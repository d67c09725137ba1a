// ASCII case folding for protocol text: header names, content types, encodings. HTTP compares
// these without regard to ASCII case only, and the standard library's Unicode toLowerCase brought
// its case tables into every module for nothing (6.6 KiB of each module's data).

/** An ASCII capital letter in lower case; any other code unit as it is. */
// @ts-ignore: decorator
@inline export function asciiLowerCode(c: i32): i32 {
  return c >= 0x41 && c <= 0x5a ? c | 0x20 : c;
}

/** The text with its ASCII capitals in lower case; the same string when it has none. */
export function asciiLower(text: string): string {
  const n = text.length;
  let first = 0;
  while (first < n && asciiLowerCode(text.charCodeAt(first)) == text.charCodeAt(first)) first++;
  if (first == n) return text;
  const size = <usize>n << 1;
  const lower = changetype<string>(__new(size, idof<string>()));
  memory.copy(changetype<usize>(lower), changetype<usize>(text), size);
  for (let i = first; i < n; i++) {
    const at = changetype<usize>(lower) + (<usize>i << 1);
    store<u16>(at, <u16>asciiLowerCode(load<u16>(at)));
  }
  return lower;
}

/** Whether two texts are equal without regard to ASCII case. */
export function sameAsciiText(a: string, b: string): bool {
  const n = a.length;
  if (b.length != n) return false;
  for (let i = 0; i < n; i++) if (asciiLowerCode(a.charCodeAt(i)) != asciiLowerCode(b.charCodeAt(i))) return false;
  return true;
}
