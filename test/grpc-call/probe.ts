// AssemblyScript, built by test/grpc-call.test.ts (not by npm run build): a filter that asks the
// rate limit service through assembly/host's gRPC calls and assembly/ratelimit's messages, so the
// test can check the host path with the real Envoy before a filter depends on it.
//
// Config: {"cluster": "ratelimit", "domain": "llm-mesh-test", "timeout_ms": 1000}
// Per request, from headers: x-tenant (the descriptor's value), x-hits, x-limit (per MINUTE),
// x-cluster and x-domain (other than the config's), and
// x-caller: "stream" (default) waits for the answer and replies with it as JSON: 200 when OK, 429
// when OVER_LIMIT, 503 with the gRPC status when the call failed, 500 when the host refused it;
// "root" has the root make the call and lets the request go on at once; the root logs the answer
// ("grpc-probe[<root id>]: root answer ...").
export {
  malloc,
  proxy_abi_version_0_2_1,
  proxy_on_context_create,
  proxy_on_configure,
  proxy_on_request_headers,
  proxy_on_done,
  proxy_on_delete,
  proxy_on_grpc_receive,
  proxy_on_grpc_close,
} from "../../assembly/host/abi";
import { grpcReceived, grpcStatusMessage, Logger, ResponseHeaders, sendResponse, utf8 } from "../../assembly/host/calls";
import { requestHeader } from "../../assembly/host/callback-cache";
import { FilterHeadersStatusValues, HostContext, registerFilter, RootContext, StreamContext } from "../../assembly/host/contexts";
import { ConfigErrors, ConfigObject } from "../../assembly/json/config-reader";
import {
  decodeRateLimitResponse,
  encodeGrpcService,
  encodeRateLimitRequest,
  RATE_LIMIT_SERVICE,
  RateLimitCode,
  RateLimitDescriptor,
  RateLimitResponse,
  RateLimitUnit,
  SHOULD_RATE_LIMIT,
} from "../../assembly/ratelimit/rls";

const NAME = "grpc-probe";
const logger = new Logger(NAME);
const SERVICE_NAME = utf8(RATE_LIMIT_SERVICE);
const METHOD = utf8(SHOULD_RATE_LIMIT);

function answerJson(response: RateLimitResponse): string {
  let statuses = "";
  for (let i = 0; i < response.statuses.length; i++) {
    const s = response.statuses[i];
    if (i > 0) statuses += ",";
    statuses += `{"code":${s.code},"has_limit":${s.hasLimit},"limit":${s.requestsPerUnit},"unit":${s.unit},"remaining":${s.limitRemaining},"reset":${s.resetSeconds}}`;
  }
  return `{"valid":${response.valid},"overall":${response.overallCode},"statuses":[${statuses}]}`;
}

class ProbeRoot extends RootContext {
  service: ArrayBuffer = new ArrayBuffer(0);
  domain: string = "";
  timeoutMs: u32 = 0;

  createContext(contextId: u32): StreamContext {
    return new ProbeStream(contextId, this);
  }

  configure(source: ConfigObject, errors: ConfigErrors): void {
    this.service = encodeGrpcService(source.string("cluster", ""), "");
    this.domain = source.string("domain", "");
    this.timeoutMs = <u32>source.int("timeout_ms", 1000, 1, 60_000);
  }

  request(domain: string | null, tenant: string, hits: u64, limit: u32): Uint8Array {
    const descriptor = new RateLimitDescriptor(limit, RateLimitUnit.Minute, hits).entry("tenant", tenant);
    return encodeRateLimitRequest(domain == null ? this.domain : domain, [descriptor], 0);
  }

  call(caller: HostContext, cluster: string | null, message: Uint8Array): i64 {
    const service = cluster == null ? this.service : encodeGrpcService(cluster, "");
    return caller.grpcCall(service, SERVICE_NAME, METHOD, message, this.timeoutMs);
  }

  onGrpcReceive(token: u32, messageSize: u32): void {
    logger.info(this.contextId, "root answer " + token.toString() + ": " + answerJson(decodeRateLimitResponse(grpcReceived(messageSize))));
  }

  onGrpcClose(token: u32, status: u32): void {
    logger.info(this.contextId, "root close " + token.toString() + ": " + status.toString() + " " + grpcStatusMessage());
  }
}

class ProbeStream extends StreamContext {
  constructor(contextId: u32, public root: ProbeRoot) {
    super(contextId, root);
  }

  onRequestHeaders(headers: u32, endOfStream: bool): FilterHeadersStatusValues {
    const tenant = requestHeader("x-tenant");
    const hits = requestHeader("x-hits");
    const limit = requestHeader("x-limit");
    const fromRoot = requestHeader("x-caller") == "root";
    const message = this.root.request(requestHeader("x-domain"), tenant == null ? "" : tenant, hits == null ? 1 : U64.parseInt(hits), limit == null ? 10 : U32.parseInt(limit));
    const caller: HostContext = fromRoot ? this.root : this;
    const token = this.root.call(caller, requestHeader("x-cluster"), message);
    logger.info(this.contextId, "call " + token.toString() + " from " + (fromRoot ? "root" : "stream"));
    if (token < 0) {
      sendResponse(500, "grpc_probe_refused", `{"result":${token}}`, new ResponseHeaders());
      return FilterHeadersStatusValues.StopIteration;
    }
    return fromRoot ? FilterHeadersStatusValues.Continue : FilterHeadersStatusValues.StopIteration;
  }

  onGrpcReceive(token: u32, messageSize: u32): void {
    const response = decodeRateLimitResponse(grpcReceived(messageSize));
    const status: u32 = response.overallCode == RateLimitCode.OverLimit ? 429 : 200;
    sendResponse(status, "grpc_probe_answer", answerJson(response), new ResponseHeaders().add("x-probe-stream", this.contextId.toString()));
  }

  onGrpcClose(token: u32, status: u32): void {
    const message = grpcStatusMessage();
    sendResponse(503, "grpc_probe_failed", `{"grpc_status":${status},"message":${JSON_string(message)}}`, new ResponseHeaders());
  }
}

function JSON_string(text: string): string {
  return '"' + text.replaceAll("\\", "\\\\").replaceAll('"', '\\"') + '"';
}

registerFilter((contextId: u32): RootContext => new ProbeRoot(contextId), NAME);
