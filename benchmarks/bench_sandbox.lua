-- wrk script for benchmarks/bench_sandbox.py: POST a small valid event with a unique event_id
-- per request (run stamp + thread number + counter), so the sandbox's dedupe never
-- short-circuits the store. wrk itself reports non-2xx answers; the key comes from the
-- SANDBOX_KEY environment variable (default "sandbox-key").

local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("tid", thread_count)
end

function init(args)
  tid = wrk.thread:get("tid")
  counter = 0
  run = os.getenv("BENCH_RUN") or tostring(os.time())
  wrk.method = "POST"
  wrk.path = "/v1/events"
  wrk.headers["Authorization"] = os.getenv("SANDBOX_KEY") or "sandbox-key"
  wrk.headers["Auth-Type"] = "api"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  counter = counter + 1
  local body = string.format(
    '{"event":{"event":"bench_event","user_id":"u%d","event_id":"bench-%s-%d-%d",' ..
    '"timestamp":"2024-01-15T10:30:00Z","properties":{"plan":"premium","price":99.99,' ..
    '"trial":false}}}',
    counter % 1000, run, tid, counter)
  return wrk.format(nil, nil, nil, body)
end
