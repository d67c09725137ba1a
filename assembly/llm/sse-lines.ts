// The SSE framing of a streamed answer (text/event-stream), read as it passes: the values of
// `data:` lines go to the usage tracker, other fields are passed over, a blank line ends the event.
// The framing rules (CR, LF or CRLF line ends, even with the CRLF split between chunks; one space
// after the colon dropped; the data lines of one event joined by a newline) live here alone, apart
// from the JSON scanner, which reads one document and knows nothing of lines or events.
//
// A data value is handed over where it lies in the chunk and the scanner stops at its line end, so
// data bytes are read once. The sink is the concrete tracker, not an interface, so that handing a
// line over costs no virtual call.
import { CR, findStop, LF, STOP_LINE } from "./answer-bytes";
import { UsageTracker } from "./usage-tracker";

// What the rest of the line is: a field name, a data value, or the value of another field.
const L_FIELD: i32 = 0;
const L_DATA: i32 = 1;
const L_SKIP: i32 = 2;
/** Field names matter only as far as telling "data" from the rest. */
const MAX_FIELD_BYTES: i32 = 8;

/** Splits one response's event stream into data values and event ends for its tracker. */
export class SseLines {
  private lineState: i32 = L_FIELD;
  private field: StaticArray<u8> = new StaticArray<u8>(MAX_FIELD_BYTES);
  private fieldLength: i32 = 0;
  private skipSpace: bool = false;
  private lastWasCR: bool = false;
  private eventHasData: bool = false;

  constructor(private sink: UsageTracker) {}

  /** SSE lines: `data:` values go to the tracker, other fields are skipped, blank lines end events. */
  read(start: usize, end: usize): void {
    let p = start;
    while (p < end) {
      let c = <i32>load<u8>(p);
      if (this.lastWasCR) {
        this.lastWasCR = false;
        if (c == LF) {
          p++;
          continue;
        }
      }
      const state = this.lineState;
      if (state == L_DATA) {
        if (this.skipSpace) {
          this.skipSpace = false;
          if (c == 0x20) {
            p++;
            continue;
          }
        }
        p = this.sink.dataValue(p, end);
      } else if (state == L_SKIP) {
        p = findStop(p, end, STOP_LINE);
      } else {
        p = this.readField(p, end);
        if (p < end && load<u8>(p) == 0x3a) {
          this.startValue();
          p++;
          continue;
        }
      }
      if (p == end) return;
      c = <i32>load<u8>(p);
      this.lastWasCR = c == CR;
      this.endLine();
      p++;
    }
  }

  /** A field name up to its colon or the line end; returns where it stopped. */
  private readField(start: usize, end: usize): usize {
    let p = start;
    while (p < end) {
      const c = <i32>load<u8>(p);
      if (c == 0x3a || c == LF || c == CR) break;
      if (this.fieldLength < MAX_FIELD_BYTES) unchecked((this.field[this.fieldLength] = <u8>c));
      this.fieldLength++;
      p++;
    }
    return p;
  }

  private isDataField(): bool {
    const f = this.field;
    return this.fieldLength == 4 && unchecked(f[0]) == 0x64 && unchecked(f[1]) == 0x61 && unchecked(f[2]) == 0x74 && unchecked(f[3]) == 0x61;
  }

  /** After "field:": a data line's value goes to the tracker; anything else is skipped. */
  private startValue(): void {
    if (!this.isDataField()) {
      this.lineState = L_SKIP;
      return;
    }
    this.lineState = L_DATA;
    this.skipSpace = true;
    this.startDataLine();
  }

  private startDataLine(): void {
    // Data lines of one event are joined by a newline.
    if (this.eventHasData) this.sink.dataLineBreak();
    this.eventHasData = true;
  }

  private endLine(): void {
    this.sink.lineEnded();
    if (this.lineState == L_FIELD) {
      if (this.fieldLength == 0) {
        this.dispatch();
      } else if (this.isDataField()) {
        this.startDataLine();
      }
    }
    this.lineState = L_FIELD;
    this.fieldLength = 0;
  }

  /** A blank line ends the event; the next one is a new JSON document. */
  private dispatch(): void {
    if (!this.eventHasData) return;
    this.eventHasData = false;
    this.sink.eventEnded();
  }
}
