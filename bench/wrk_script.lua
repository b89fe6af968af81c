-- Request generator and status counter for wrk, driven by bench/loadgen.py.
--
-- Arguments after "--": mode (get|put), namespace, key count, value size, seed.
-- GET spreads over the pre-populated keys k00000000..; PUT writes random keys
-- p00000000.. of the same length with a value of the given size. Every
-- response is counted by status class, because wrk itself only counts
-- "status > 399" and the benchmark must tell a 5xx from a 4xx.

local threads = {}
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_id", thread_count)
  table.insert(threads, thread)
end

function init(args)
  mode = args[1]
  prefix = "/v1/kv/" .. args[2] .. "/"
  keys = tonumber(args[3])
  local size = tonumber(args[4])
  math.randomseed(tonumber(args[5]) + thread_id * 7919)
  local chars = {}
  for i = 1, size do
    chars[i] = string.char(math.random(97, 122))
  end
  body = table.concat(chars)
  put_headers = { ["Content-Type"] = "application/octet-stream" }
  status_2xx, status_4xx, status_5xx, status_other = 0, 0, 0, 0
end

function request()
  if mode == "get" then
    return wrk.format("GET", string.format("%sk%08d", prefix, math.random(0, keys - 1)))
  end
  return wrk.format(
    "PUT", string.format("%sp%08d", prefix, math.random(0, 99999999)), put_headers, body
  )
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    status_2xx = status_2xx + 1
  elseif status >= 500 then
    status_5xx = status_5xx + 1
  elseif status >= 400 then
    status_4xx = status_4xx + 1
  else
    status_other = status_other + 1
  end
end

function done(summary, latency, requests)
  local counts = { status_2xx = 0, status_4xx = 0, status_5xx = 0, status_other = 0 }
  for _, thread in ipairs(threads) do
    for name, _ in pairs(counts) do
      counts[name] = counts[name] + (thread:get(name) or 0)
    end
  end
  local errors = summary.errors
  io.write(string.format(
    'BENCH-RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, '
      .. '"p99_us": %d, "max_us": %d, "mean_us": %.1f, "status_2xx": %d, '
      .. '"status_4xx": %d, "status_5xx": %d, "status_other": %d, '
      .. '"connect_errors": %d, "read_errors": %d, "write_errors": %d, "timeouts": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, counts.status_2xx,
    counts.status_4xx, counts.status_5xx, counts.status_other,
    errors.connect, errors.read, errors.write, errors.timeout
  ))
end
