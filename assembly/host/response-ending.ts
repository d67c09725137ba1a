// How a stream's response ended, for the filters that judge it (llm-metrics' outcome, llm-router's
// guard and record). A property read is the dearest host call (Envoy calls the module's malloc to
// hand the answer in), and the response headers callback has the header map in hand already: the
// status is read from its `:status`. Envoy's response.code_details are asked only when the response
// did not pass here whole (a reset, a client gone), where the status alone cannot tell: a response
// that passed whole was sent with the status it carried, and its details would say only that.
import { propertyInt, propertyString, responseStatus } from "./callback-cache";

const RESPONSE_CODE: string[] = ["response", "code"];
const RESPONSE_CODE_DETAILS: string[] = ["response", "code_details"];

export class ResponseEnding {
  /** The `:status` of the response headers that passed here; 0 before them, or when unreadable. */
  private headerStatus: i32 = 0;
  /** The response's last byte passed here. */
  private whole: bool = false;

  /** From a response headers callback. */
  headersPassed(endOfStream: bool): void {
    this.headerStatus = responseStatus();
    this.whole = endOfStream && this.headerStatus > 0;
  }

  /** From a response body callback. */
  bodyPassed(endOfStream: bool): void {
    if (endOfStream && this.headerStatus > 0) this.whole = true;
  }

  /** The status sent downstream; 0 when none was. */
  status(): i64 {
    if (this.whole) return this.headerStatus;
    return max<i64>(propertyInt(RESPONSE_CODE), 0);
  }

  /** Envoy's %RESPONSE_CODE_DETAILS% where they can say more than the status; "" otherwise. */
  details(): string {
    if (this.whole) return "";
    const details = propertyString(RESPONSE_CODE_DETAILS);
    return details != null ? details : "";
  }
}
