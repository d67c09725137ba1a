-- wrk script for scripts/bench.ts: every request is the same POST, whose body is read once from
-- the file named by BENCH_BODY, with the Authorization header BENCH_AUTHORIZATION.
-- BENCH_ANSWER=sse asks the bench upstream for a streamed answer.
-- No response() hook: defining one makes wrk parse every answer in Lua, which would slow the
-- load generator more than the proxy under test.
local file = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = assert(os.getenv("BENCH_AUTHORIZATION"))
local answer = os.getenv("BENCH_ANSWER")
if answer and answer ~= "" then
  wrk.headers["x-bench-answer"] = answer
end

-- One machine-readable line; the percentiles come from wrk's own microsecond histogram.
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
