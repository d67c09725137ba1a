// An HTTP/1.1 client over raw sockets for the fuzz run and the soak: it sends exactly the bytes it
// is given (broken framing, odd headers, bodies in tiny writes), keeps connections alive between
// requests, and parses responses (content-length, chunked, or until close) without trusting them.
import { connect, type Socket } from "node:net";

export interface RawResponse {
  status: number;
  /** Lower-case names; repeated headers joined with ", ". */
  headers: Record<string, string>;
  body: Buffer;
}

const CRLF_CRLF = Buffer.from("\r\n\r\n");

/**
 * Parses one response at the start of `data`: the response and the bytes it used, or undefined
 * when more bytes are needed. `closed` says the peer has closed, which ends a body without length.
 */
export function parseResponse(data: Buffer, closed: boolean): { response: RawResponse; used: number } | undefined {
  let offset = 0;
  for (;;) {
    const headEnd = data.indexOf(CRLF_CRLF, offset);
    if (headEnd < 0) return undefined;
    const lines = data.subarray(offset, headEnd).toString("latin1").split("\r\n");
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0])?.[1] ?? NaN);
    if (!Number.isFinite(status)) throw new Error(`not an HTTP response: ${JSON.stringify(lines[0].slice(0, 80))}`);
    const headers: Record<string, string> = {};
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(":");
      if (colon <= 0) continue;
      const name = line.slice(0, colon).trim().toLowerCase();
      const value = line.slice(colon + 1).trim();
      headers[name] = name in headers ? `${headers[name]}, ${value}` : value;
    }
    const bodyStart = headEnd + 4;
    // Interim answers (100 Continue) precede the real one.
    if (status >= 100 && status < 200) {
      offset = bodyStart;
      continue;
    }
    if (status === 204 || status === 304) return { response: { status, headers, body: Buffer.alloc(0) }, used: bodyStart };
    if (/\bchunked\b/i.test(headers["transfer-encoding"] ?? "")) {
      const chunks: Buffer[] = [];
      let at = bodyStart;
      for (;;) {
        const lineEnd = data.indexOf("\r\n", at);
        if (lineEnd < 0) return undefined;
        const size = parseInt(data.subarray(at, lineEnd).toString("latin1").split(";")[0], 16);
        if (!Number.isFinite(size)) throw new Error("bad chunk size in response");
        if (size === 0) {
          // Trailers, if any, end with an empty line.
          const end = data.indexOf(CRLF_CRLF, lineEnd);
          if (end < 0) return undefined;
          return { response: { status, headers, body: Buffer.concat(chunks) }, used: end + 4 };
        }
        if (lineEnd + 2 + size + 2 > data.length) return undefined;
        chunks.push(data.subarray(lineEnd + 2, lineEnd + 2 + size));
        at = lineEnd + 2 + size + 2;
      }
    }
    if (headers["content-length"] !== undefined) {
      const length = Number(headers["content-length"]);
      if (bodyStart + length > data.length) return undefined;
      return { response: { status, headers, body: data.subarray(bodyStart, bodyStart + length) }, used: bodyStart + length };
    }
    if (!closed) return undefined;
    return { response: { status, headers, body: data.subarray(bodyStart) }, used: data.length };
  }
}

/** Every response in `data` received on a connection that is now closed; trailing bytes are ignored. */
export function parseAll(data: Buffer): RawResponse[] {
  const out: RawResponse[] = [];
  let rest = data;
  while (rest.length) {
    const parsed = parseResponse(rest, true);
    if (!parsed) break;
    out.push(parsed.response);
    rest = rest.subarray(parsed.used);
  }
  return out;
}

export type Outcome = { response: RawResponse } | { closed: true } | { timedOut: true };

/**
 * A keep-alive connection that carries one request at a time and reconnects after the peer
 * closes. A request is a list of writes: more than one sends the parts in separate TCP segments.
 */
export class Connection {
  private socket: Socket | undefined;
  private received: Buffer = Buffer.alloc(0);
  private closed = false;
  private waiter: (() => void) | undefined;

  constructor(private port: number, private host = "127.0.0.1") {}

  private async open(): Promise<Socket> {
    if (this.socket && !this.closed) return this.socket;
    this.received = Buffer.alloc(0);
    this.closed = false;
    const socket = connect({ port: this.port, host: this.host, noDelay: true });
    await new Promise<void>((ok, fail) => {
      socket.once("connect", ok);
      socket.once("error", fail);
    });
    // A replaced socket's late events must not touch its successor.
    socket.on("data", (chunk: Buffer) => {
      if (this.socket !== socket) return;
      this.received = this.received.length ? Buffer.concat([this.received, chunk]) : chunk;
      this.waiter?.();
    });
    const onClose = () => {
      if (this.socket !== socket) return;
      this.closed = true;
      this.waiter?.();
    };
    socket.on("close", onClose);
    socket.on("end", onClose);
    socket.on("error", onClose);
    this.socket = socket;
    return socket;
  }

  /** Sends the writes and waits for one response, the connection's close, or the timeout. */
  async request(writes: Buffer[], options: { timeoutMs?: number; pauseBetweenWrites?: boolean; endAfter?: boolean } = {}): Promise<Outcome> {
    const socket = await this.open();
    const timeoutMs = options.timeoutMs ?? 15_000;
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      this.waiter?.();
    }, timeoutMs);
    try {
      for (let i = 0; i < writes.length; i++) {
        if (this.closed) break;
        socket.write(writes[i]);
        // Lets each part leave as its own segment, so Envoy hands the filters many small pieces.
        if (options.pauseBetweenWrites && i < writes.length - 1) await new Promise((done) => setTimeout(done, 1));
      }
      if (options.endAfter && !this.closed) socket.end();
      for (;;) {
        const parsed = parseResponse(this.received, this.closed);
        if (parsed) {
          this.received = this.received.subarray(parsed.used);
          const response = parsed.response;
          if (/\bclose\b/i.test(response.headers.connection ?? "") || options.endAfter) this.destroy();
          return { response };
        }
        if (this.closed) {
          this.destroy();
          return { closed: true };
        }
        if (timedOut) {
          this.destroy();
          return { timedOut: true };
        }
        await new Promise<void>((done) => (this.waiter = done));
        this.waiter = undefined;
      }
    } finally {
      clearTimeout(timer);
    }
  }

  destroy(): void {
    this.socket?.destroy();
    this.socket = undefined;
    this.closed = true;
  }
}

/**
 * Sends `bytes` on a fresh connection, half-closes it when asked, and returns every response
 * that arrives before the peer closes or the timeout: for framing that ends a connection.
 */
export function oneShot(port: number, bytes: Buffer, options: { timeoutMs?: number; halfClose?: boolean } = {}): Promise<{ responses: RawResponse[]; timedOut: boolean }> {
  const { timeoutMs = 5000, halfClose = false } = options;
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const socket = connect({ port, host: "127.0.0.1", noDelay: true });
    let timedOut = false;
    const finish = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ responses: parseAll(Buffer.concat(chunks)), timedOut });
    };
    const timer = setTimeout(() => {
      timedOut = true;
      finish();
    }, timeoutMs);
    socket.on("connect", () => {
      socket.write(bytes);
      if (halfClose) socket.end();
    });
    socket.on("data", (c: Buffer) => chunks.push(c));
    socket.on("close", finish);
    socket.on("error", finish);
  });
}
