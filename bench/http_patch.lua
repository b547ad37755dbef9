-- wrk script for `make bench` (bench/run.sh): the HTTP/JSON twin of the
-- gRPC update scenario. Every request is PATCH
-- /v1/models/bench_counters/b<random id> with {"n": <fresh value>} and the
-- credential from RECORDD_BENCH_TOKEN, over keep-alive connections. At the
-- end one line "WRKJSON {...}" carries the figures for the summary.
local records = tonumber(os.getenv("BENCH_RECORDS") or "10000")
local token = os.getenv("RECORDD_BENCH_TOKEN") or ""
local headers = {
  ["Authorization"] = "Bearer " .. token,
  ["Content-Type"] = "application/json",
}
local seq = 0
local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  math.randomseed(os.time() * 1000 + (tid or 0))
  bad = 0
end

function request()
  seq = seq + 1
  local id = "b" .. math.random(0, records - 1)
  return wrk.format("PATCH", "/v1/models/bench_counters/" .. id, headers, '{"n":' .. seq .. '}')
end

function response(status, hdrs, body)
  -- a 200 whose receipt is not a success is a rejected write
  if status ~= 200 or not string.find(body, '"success":true', 1, true) then
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local rejected = 0
  for _, t in ipairs(threads) do
    rejected = rejected + (t:get("bad") or 0)
  end
  local secs = summary.duration / 1e6
  io.write(string.format(
    'WRKJSON {"run":"http","scenario":"patch","requests":%d,"rate":%.1f,' ..
    '"p50_us":%d,"p99_us":%d,"p999_us":%d,"failed":%d,"socket_errors":%d}\n',
    summary.requests, summary.requests / secs,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
    rejected + summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
