"""Driver of bench/jobs.sh (stdlib only). Baseline first: COUNT synchronous
chat calls spread over the nodes, closed loop with THREADS in flight. Then
COUNT jobs (an equal share per priority, submitted in shuffled order) spread
over the same nodes, then polling until all are final. Reports throughput
(baseline: sync requests/s; jobs: jobs accepted and finished per second from
the first submission to the last finish), and p50/p99 queue wait (start of
the job's run minus its acceptance) per priority, from each job's record.
Redis commands (INFO commandstats of REDIS_PORT) are counted per phase:
per synchronous request and per job (submission, runs, polling excluded
as far as it can be: the poll phase is counted apart; idle worker polling
is included in both).
Usage: jobs.py REDIS_PORT COUNT THREADS URL..."""
import http.client
import subprocess
import json
import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

REDIS_PORT, COUNT, THREADS, URLS = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
PRIORITIES = ["critical", "high", "normal", "low", "bulk"]
local = threading.local()


def conn(i):
    cache = getattr(local, "conns", None)
    if cache is None:
        cache = local.conns = {}
    u = URLS[i % len(URLS)]
    if u not in cache:
        p = urlparse(u)
        cache[u] = http.client.HTTPConnection(p.hostname, p.port, timeout=60)
    return cache[u]


def call(i, method, path, body=None, headers=None):
    h = {"authorization": "Bearer sk-bench", "content-type": "application/json"}
    h.update(headers or {})
    for _ in range(3):
        c = conn(i)
        try:
            c.request(method, path, body=json.dumps(body) if body is not None else None, headers=h)
            r = c.getresponse()
            return r.status, r.read()
        except (http.client.HTTPException, OSError):
            c.close()
            local.conns.pop(URLS[i % len(URLS)], None)
    raise SystemExit(f"{method} {path} failed")


def commands():
    out = subprocess.run(["redis-cli", "-p", REDIS_PORT, "info", "commandstats"],
                         capture_output=True, text=True, check=True).stdout
    return sum(int(l.split("calls=")[1].split(",")[0]) for l in out.splitlines() if l.startswith("cmdstat_"))


def chat(i, tag):
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"{tag} {i}"}]}


def sync(i):
    status, body = call(i, "POST", "/v1/chat/completions", chat(i, "sync"))
    assert status == 200, (status, body)


c0 = commands()
t0 = time.time()
with ThreadPoolExecutor(THREADS) as pool:
    list(pool.map(sync, range(COUNT)))
sync_rate = COUNT / (time.time() - t0)
c1 = commands()

order = [(i, PRIORITIES[i % 5]) for i in range(COUNT)]
random.shuffle(order)


def submit(item):
    i, p = item
    status, body = call(i, "POST", "/v1/chat/completions", chat(i, "job"),
                        {"prefer": "respond-async", "x-sluice-priority": p})
    assert status == 202, (status, body)
    return json.loads(body)["id"], p


t0 = time.time()
with ThreadPoolExecutor(THREADS) as pool:
    ids = list(pool.map(submit, order))
submitted = time.time() - t0


def final(item):
    (job, p), i = item
    while True:
        status, body = call(i, "GET", f"/v1/jobs/{job}")
        v = json.loads(body)
        if v["status"] not in ("queued", "running"):
            return v
        time.sleep(0.2)


# Wait for the queues to drain (one cheap look per second), then read
# every job once: the job phase's commands are counted without polling.
while True:
    depth = subprocess.run(["redis-cli", "-p", REDIS_PORT, "eval",
                            "local n = 0 for _, p in ipairs({'critical','high','normal','low','bulk'}) do "
                            "n = n + redis.call('XLEN', 'sluice:jobs:{q}:' .. p) end "
                            "return n + redis.call('ZCARD', 'sluice:jobs:{q}:delayed')", "0"],
                           capture_output=True, text=True, check=True).stdout.strip()
    if depth == "0":
        break
    time.sleep(1)
c2 = commands()
with ThreadPoolExecutor(THREADS) as pool:
    done = list(pool.map(final, zip(ids, range(COUNT))))
first = min(v["created_at_ms"] for v in done)
last = max(v["finished_at_ms"] for v in done)
ok = sum(v["status"] == "succeeded" for v in done)


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


waits = {p: [v["started_at_ms"] - v["created_at_ms"] for v in done if v["priority"] == p] for p in PRIORITIES}
print(json.dumps({
    "count": COUNT, "succeeded": ok, "nodes": len(URLS),
    "sync_req_per_s": round(sync_rate, 1),
    "redis_cmds_per_sync_request": round((c1 - c0) / COUNT, 2),
    "redis_cmds_per_job": round((c2 - c1) / COUNT, 2),
    "jobs_per_s": round(COUNT / ((last - first) / 1000), 1),
    "submit_per_s": round(COUNT / submitted, 1),
    "wait_ms": {p: {"p50": pct(w, 0.5), "p99": pct(w, 0.99)} for p, w in waits.items()},
}))
