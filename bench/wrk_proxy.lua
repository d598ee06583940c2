-- wrk script for bench/throughput.py: one fixed request, and a JSON summary at the end.
--   BENCH_TARGET  request target: an absolute URL (plain HTTP through a proxy) or a path
--   BENCH_HOST    the Host header
--   BENCH_AUTH    base64 "user:password" for Proxy-Authorization, or empty
wrk.method = "GET"
wrk.path = os.getenv("BENCH_TARGET") or "/"
wrk.headers["Host"] = os.getenv("BENCH_HOST")
local auth = os.getenv("BENCH_AUTH")
if auth and auth ~= "" then
   wrk.headers["Proxy-Authorization"] = "Basic " .. auth
end

function done(summary, latency, requests)
   io.write(string.format(
      '{"requests": %d, "duration_us": %d, "bytes": %d, "connect_errors": %d, "read_errors": %d, ' ..
      '"write_errors": %d, "status_errors": %d, "timeouts": %d, "p50_us": %d, "p99_us": %d}\n',
      summary.requests, summary.duration, summary.bytes, summary.errors.connect, summary.errors.read,
      summary.errors.write, summary.errors.status, summary.errors.timeout,
      latency:percentile(50), latency:percentile(99)))
end
