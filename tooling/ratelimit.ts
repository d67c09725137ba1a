// Redis and Envoy's reference rate limit service (envoyproxy/ratelimit, built by
// scripts/setup-ratelimit.sh), started on loopback for the cluster-wide budget tests, with a gRPC
// client over node:http2 and counter reads through redis-cli.
//
// FINDINGS about the pinned service, from experiments (test/ratelimit-service.test.ts keeps the ones
// llm-mesh relies on) and its source (src/config/config_impl.go GetLimit, src/limiter/,
// src/redis/fixed_cache_impl.go, src/utils/utilities.go):
// - A config file holding only `domain: <name>` is enough: a descriptor that carries its own `limit`
//   (requests_per_unit + unit) is enforced with that limit and never looked up in the config. A
//   descriptor without one, or any descriptor of a domain the config lacks, is answered OK with no
//   current_limit and no duration_until_reset, and nothing is counted: the only sign of a wrong
//   domain is that missing current_limit.
// - Counter key: `<CACHE_KEY_PREFIX><domain>_<key1>_<value1>_<key2>_<value2>_..._<window start>`,
//   the window start being unix seconds rounded down to the unit (fixed windows: second, minute,
//   hour, day, week = 7 days, month = 30 days, year = 365 days, all aligned to the epoch). Entries
//   are joined unescaped, so [a=b_c] and [a_b=c] share a counter. Every increment sets the key's
//   TTL again to the unit plus a random 0..EXPIRATION_JITTER_MAX_SECONDS (default 300).
// - Each descriptor is one `INCRBY key hits` then a verdict on the new total: OVER_LIMIT when the
//   total exceeds requests_per_unit, so a reservation that would overshoot is refused whole and two
//   replicas cannot both fit into the last units. A refused request still adds its hits (counters
//   only grow within a window); `hits_addend` 0 (an empty UInt64Value present) looks without
//   counting. Every descriptor of a request is counted even when another one is over the limit.
//   Two settings change this, both off by default and here: LOCAL_CACHE_SIZE_IN_BYTES (a key once
//   over its limit is refused from memory, uncounted, until its window ends) and
//   STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT.
// - hits: the descriptor's `hits_addend` wrapper when present (0 allowed), else the request's
//   `hits_addend`, where 0 means 1.
// - OK answers carry limit_remaining = limit - total; OVER_LIMIT answers carry none (0). Both echo
//   current_limit {requests_per_unit, unit} (name empty) and duration_until_reset = whole seconds to
//   the window's end (1..unit, nanos 0).
// - overall_code is OVER_LIMIT when any descriptor is.
// - An override with unit UNKNOWN (0) crashes the whole service (a Go panic in UnitToDivider), and
//   requests_per_unit 0 refuses everything: both must be refused in llm-mesh's config instead.
// - Empty domain or no descriptors: gRPC status 2 (UNKNOWN) with a message, no response message.
// - Redis down: gRPC status 2 "response returned from Conn: EOF" within milliseconds (a refused
//   connection; a silent network would wait REDIS_TIMEOUT, 10 s by default). After Redis is back the
//   service fails a few more calls while its pool drops dead connections, then recovers; a Redis
//   without persistence starts the windows from zero.
import { execFile, spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { connect } from "node:http2";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { repoDir } from "./envoy-bin.ts";
import { freePort } from "./local-registry.ts";
import { answers, Process } from "./process.ts";
import { decodeResponse, encodeRequest, type RateLimitRequest, type RateLimitResponse } from "./rls-wire.ts";

const run = promisify(execFile);

export const SHOULD_RATE_LIMIT = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";

/** The binary scripts/setup-ratelimit.sh built, or RATELIMIT_BIN. */
export function rateLimitBinary(): string {
  const bin = process.env.RATELIMIT_BIN ?? join(repoDir, ".ratelimit", "bin", "service_cmd");
  if (!existsSync(bin)) throw new Error(`rate limit service not built (${bin} missing): run \`npm run setup:ratelimit\` or set RATELIMIT_BIN`);
  return bin;
}

/** Where PATH finds a Redis tool, as scripts/setup-ratelimit.sh looked for it. */
function tool(name: "redis-server" | "redis-cli"): string {
  const path = (process.env.PATH ?? "").split(":").map((dir) => join(dir, name)).find((p) => existsSync(p));
  if (!path) throw new Error(`${name} missing: apt-get install -y --no-install-recommends redis-server redis-tools`);
  return path;
}

export interface Redis {
  port: number;
  /** The server's process id, for CPU accounting (the benchmark's peer mode). */
  pid: number;
  /** host:port, as REDIS_URL takes it. */
  address: string;
  /** The integer at `key`, or undefined when there is no such key. */
  counter(key: string): Promise<number | undefined>;
  keys(pattern?: string): Promise<string[]>;
  /** Seconds until `key` expires: -1 without expiry, -2 when absent. */
  ttl(key: string): Promise<number>;
  log(): string;
  stop(): Promise<void>;
}

export interface RedisOptions {
  workDir?: string;
  /** A fixed port, to bring a stopped Redis back where the service looks for it. */
  port?: number;
}

/** A throwaway Redis: loopback only, nothing saved to disk, its own directory. */
export async function startRedis(options: RedisOptions = {}): Promise<Redis> {
  const workDir = options.workDir ?? mkdtempSync(join(tmpdir(), "llm-mesh-redis-"));
  mkdirSync(workDir, { recursive: true });
  const port = options.port ?? (await freePort());
  const args = ["--bind", "127.0.0.1", "--port", String(port), "--save", "", "--appendonly", "no", "--dir", workDir, "--daemonize", "no", "--loglevel", "warning"];
  const p = new Process("redis-server", spawn("setpriv", ["--pdeathsig", "KILL", tool("redis-server"), ...args], { cwd: workDir, stdio: ["ignore", "pipe", "pipe"] }), join(workDir, "redis.log"));
  const cli = async (...cmd: string[]) => (await run(tool("redis-cli"), ["-h", "127.0.0.1", "-p", String(port), "--raw", ...cmd])).stdout.trim();
  try {
    await p.waitUntil("PONG", async () => (await cli("PING")) === "PONG", 10_000);
  } catch (err) {
    await p.stop();
    throw err;
  }
  return {
    port,
    pid: p.child.pid!,
    address: `127.0.0.1:${port}`,
    async counter(key) {
      const out = await cli("GET", key);
      return out === "" ? undefined : Number(out);
    },
    async keys(pattern = "*") {
      const out = await cli("KEYS", pattern);
      return out === "" ? [] : out.split("\n").sort();
    },
    async ttl(key) {
      return Number(await cli("TTL", key));
    },
    log: () => p.output,
    stop: () => p.stop(),
  };
}

export interface RateLimitService {
  /** host:port of the gRPC listener, for an Envoy cluster or rls(). */
  grpcAddress: string;
  grpcPort: number;
  domain: string;
  pid: number;
  log(): string;
  stop(): Promise<void>;
}

export interface RateLimitServiceOptions {
  redis: Pick<Redis, "address">;
  /** The one domain the config file declares; every limit arrives with the request. */
  domain: string;
  /**
   * The config file's text when limits live in the service's config (as Envoy's own rate limit
   * filter needs: it cannot send a limit with a descriptor); must declare `domain`. Default: the
   * domain alone.
   */
  config?: string;
  workDir?: string;
  /** A fixed gRPC port, to bring a stopped service back where Envoy's cluster points. */
  grpcPort?: number;
  /** More settings (the service reads them all from the environment). */
  env?: Record<string, string>;
}

export async function startRateLimitService(options: RateLimitServiceOptions): Promise<RateLimitService> {
  const bin = rateLimitBinary();
  const workDir = options.workDir ?? mkdtempSync(join(tmpdir(), "llm-mesh-ratelimit-"));
  // The service reads <RUNTIME_ROOT>/<RUNTIME_SUBDIRECTORY>/<RUNTIME_APPDIRECTORY>/*.yaml; without
  // RUNTIME_WATCH_ROOT it watches that directory itself rather than expecting a symlink swap.
  const configDir = join(workDir, "runtime", "ratelimit", "config");
  mkdirSync(configDir, { recursive: true });
  writeFileSync(join(configDir, "llm-mesh.yaml"), options.config ?? `domain: ${options.domain}\n`);
  const grpcPort = options.grpcPort ?? (await freePort());
  const [httpPort, debugPort] = [await freePort(), await freePort()];
  const env = {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    // It binds 0.0.0.0 on fixed ports by default; a test machine's loopback is enough.
    HOST: "127.0.0.1",
    PORT: String(httpPort),
    GRPC_HOST: "127.0.0.1",
    GRPC_PORT: String(grpcPort),
    DEBUG_HOST: "127.0.0.1",
    DEBUG_PORT: String(debugPort),
    // Its stats would otherwise go to a debug log line per timer, which nothing here reads.
    USE_STATSD: "false",
    DISABLE_STATS: "true",
    LOG_LEVEL: "warn",
    REDIS_SOCKET_TYPE: "tcp",
    REDIS_URL: options.redis.address,
    RUNTIME_ROOT: join(workDir, "runtime"),
    RUNTIME_SUBDIRECTORY: "ratelimit",
    RUNTIME_APPDIRECTORY: "config",
    RUNTIME_WATCH_ROOT: "false",
    // Healthy only once the domain is loaded: before that every descriptor would be answered OK.
    HEALTHY_WITH_AT_LEAST_ONE_CONFIG_LOADED: "true",
    ...options.env,
  };
  const p = new Process("ratelimit", spawn("setpriv", ["--pdeathsig", "KILL", bin], { cwd: workDir, env, stdio: ["ignore", "pipe", "pipe"] }), join(workDir, "ratelimit.log"));
  try {
    await p.waitUntil("healthy /healthcheck", () => answers(`http://127.0.0.1:${httpPort}/healthcheck`), 30_000);
  } catch (err) {
    await p.stop();
    throw err;
  }
  return { grpcAddress: `127.0.0.1:${grpcPort}`, grpcPort, domain: options.domain, pid: p.child.pid!, log: () => p.output, stop: () => p.stop() };
}

export interface GrpcAnswer {
  /** grpc-status from the trailers (or headers, for a trailers-only answer). */
  status: number;
  message: string;
  response?: RateLimitResponse;
  /** The response message as it came, for byte-level cross-checks. */
  raw?: Buffer;
}

/** One ShouldRateLimit call over a fresh HTTP/2 connection. */
export async function shouldRateLimit(grpcAddress: string, request: RateLimitRequest | Buffer): Promise<GrpcAnswer> {
  const message = Buffer.isBuffer(request) ? request : encodeRequest(request);
  const frame = Buffer.alloc(5 + message.length);
  frame.writeUInt32BE(message.length, 1);
  message.copy(frame, 5);
  const session = connect(`http://${grpcAddress}`);
  try {
    return await new Promise<GrpcAnswer>((resolve, reject) => {
      session.once("error", reject);
      const stream = session.request({ ":method": "POST", ":path": SHOULD_RATE_LIMIT, "content-type": "application/grpc", te: "trailers" });
      const chunks: Buffer[] = [];
      let status: number | undefined;
      let grpcMessage = "";
      const take = (h: Record<string, unknown>) => {
        if (h["grpc-status"] !== undefined) status = Number(h["grpc-status"]);
        if (h["grpc-message"] !== undefined) grpcMessage = decodeURIComponent(String(h["grpc-message"]));
      };
      stream.on("response", take);
      stream.on("trailers", take);
      stream.on("data", (c: Buffer) => chunks.push(c));
      stream.on("error", reject);
      stream.on("close", () => {
        const body = Buffer.concat(chunks);
        if (status === undefined) return reject(new Error(`no grpc-status (${body.length} body bytes)`));
        if (body.length === 0) return resolve({ status, message: grpcMessage });
        const length = body.readUInt32BE(1);
        const raw = body.subarray(5, 5 + length);
        resolve({ status, message: grpcMessage, raw, response: decodeResponse(raw) });
      });
      stream.end(frame);
    });
  } finally {
    session.close();
  }
}

/** The Redis key the service counts a descriptor in: see FINDINGS. */
export function counterKey(domain: string, entries: [string, string][], windowStart: number): string {
  return `${domain}_${entries.map(([k, v]) => `${k}_${v}_`).join("")}${windowStart}`;
}
