// The byte classes of a model's answer, in one 256-byte table shared by the two readers that go
// over every byte of it, the SSE line reader (sse-lines.ts) and the usage scanner
// (usage-scanner.ts): one load per byte tells either where a run ends, and the scanner reading a
// data line looks for the end of a string and the end of the line in the same search.

export const LF: i32 = 0x0a;
export const CR: i32 = 0x0d;
export const QUOTE: i32 = 0x22;
export const BACKSLASH: i32 = 0x5c;

// Byte classes: bit 1 quote and backslash (the end of a run of string content), bit 2 line ends
// (which end an SSE data line even inside a string), bit 4 the letters, digits and signs of
// literals and numbers (a run of them outside a usage object is skipped whole).
export const STOP_STRING: u8 = 1;
export const STOP_LINE: u8 = 2;
export const BARE: u8 = 4;
export const STOPS: usize = stopTable();

function stopTable(): usize {
  const table = memory.data(256);
  store<u8>(table + QUOTE, STOP_STRING);
  store<u8>(table + BACKSLASH, STOP_STRING);
  store<u8>(table + LF, STOP_LINE);
  store<u8>(table + CR, STOP_LINE);
  for (let c = 0x30; c <= 0x39; c++) store<u8>(table + <usize>c, BARE);
  for (let c = 0x61; c <= 0x7a; c++) store<u8>(table + <usize>c, BARE);
  for (let c = 0x41; c <= 0x5a; c++) store<u8>(table + <usize>c, BARE);
  store<u8>(table + 0x2b, BARE);
  store<u8>(table + 0x2d, BARE);
  store<u8>(table + 0x2e, BARE);
  return table;
}

/** The first byte at or after `p` (before `end`) that is in `stops`; `end` when there is none. */
@inline export function findStop(p: usize, end: usize, stops: u8): usize {
  while (p < end && (load<u8>(STOPS + <usize>load<u8>(p)) & stops) == 0) p++;
  return p;
}
