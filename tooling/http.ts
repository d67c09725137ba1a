// Small HTTP helpers for tests: JSON posts through Envoy, SSE parsing, and raw TCP for requests
// that fetch refuses to send (malformed framing, odd headers).
import { connect } from "node:net";

export interface HttpResult {
  status: number;
  /** Lower-case header names. */
  headers: Record<string, string>;
  text: string;
  /** Parsed body, or undefined when the body is not JSON. */
  json: any;
}

async function toResult(res: Response): Promise<HttpResult> {
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: Object.fromEntries(res.headers), text, json };
}

/** POSTs `body` as JSON; a string body is sent as-is so tests can send broken JSON. */
export async function postJson(url: string, body: unknown, headers: Record<string, string> = {}): Promise<HttpResult> {
  const res = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
  return toResult(res);
}

export async function get(url: string, headers: Record<string, string> = {}): Promise<HttpResult> {
  return toResult(await fetch(url, { headers }));
}

export interface SseEvent {
  event?: string;
  data: string;
}

/** Parses a text/event-stream body per the WHATWG rules tests rely on (event, multi-line data). */
export function readSse(text: string): SseEvent[] {
  const events: SseEvent[] = [];
  for (const block of text.replace(/\r\n?/g, "\n").split("\n\n")) {
    let event: string | undefined;
    const data: string[] = [];
    for (const line of block.split("\n")) {
      if (line === "" || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") event = value;
      else if (field === "data") data.push(value);
    }
    // Blocks without data are not dispatched as events.
    if (data.length) events.push(event === undefined ? { data: data.join("\n") } : { event, data: data.join("\n") });
  }
  return events;
}

/**
 * Writes `request` on a fresh TCP connection and returns everything received until the peer
 * closes or `timeoutMs` passes (keep-alive peers never close, so the timeout is normal there).
 */
export function rawHttp(port: number, request: string | Buffer, options: { timeoutMs?: number; host?: string } = {}): Promise<string> {
  const { timeoutMs = 2000, host = "127.0.0.1" } = options;
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const socket = connect({ port, host });
    const done = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(Buffer.concat(chunks).toString("utf8"));
    };
    const timer = setTimeout(done, timeoutMs);
    socket.on("connect", () => socket.write(request));
    socket.on("data", (c: Buffer) => chunks.push(c));
    socket.on("end", done);
    socket.on("close", done);
    socket.on("error", (err: NodeJS.ErrnoException) => {
      // A reset after a response still counts as a response; a refused connect does not.
      if (chunks.length || err.code === "ECONNRESET") done();
      else {
        clearTimeout(timer);
        reject(err);
      }
    });
  });
}

/** POSTs and reads the body as far as it arrives: a stream cut by the upstream still yields its start. */
export async function postPartial(url: string, body: object, headers: Record<string, string>): Promise<{ status: number; text: string; complete: boolean }> {
  const res = await fetch(url, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body) });
  let text = "";
  const decoder = new TextDecoder();
  try {
    for await (const chunk of res.body!) text += decoder.decode(chunk as Uint8Array, { stream: true });
    return { status: res.status, text, complete: true };
  } catch {
    return { status: res.status, text, complete: false };
  }
}
