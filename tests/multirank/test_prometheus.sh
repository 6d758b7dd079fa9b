#!/usr/bin/env bash
# The Prometheus endpoint (log.prometheus_port) under a real Prometheus
# server (Debian's `prometheus`, on loopback) scraping a DP2 training run
# (mpirun -np 2, so the communication metrics are there too) every 250 ms:
#   - promtool check metrics accepts what the endpoint serves;
#   - after the run, Prometheus's HTTP API gives moetrain_loss at each
#     scraped step equal to metrics.jsonl's loss at that step;
#   - every query of the Grafana dashboard runs, and every moetrain_ metric
#     it names is one the endpoint serves;
#   - the alert rules pass promtool check rules and their unit tests (the
#     stall alert firing on a series with no progress);
#   - a busy port is one line at start-up, exit 2.
source "$(dirname "$0")/../e2e/lib.sh"
need_brown
: "${MOETRAIN_MPIRUN:?}"
for tool in prometheus promtool curl; do
  if ! command -v "$tool" > /dev/null; then
    echo "SKIP: $tool is absent (scripts/setup.sh installs the prometheus and curl packages)"
    exit $SKIP
  fi
done
work="$MOETRAIN_E2E_WORK/prometheus"
rm -rf "$work"; mkdir -p "$work"
monitoring="$MOETRAIN_SOURCE_DIR/launch/monitoring"

promtool check rules "$monitoring/moetrain-alerts.yml"
promtool test rules "$monitoring/moetrain-alerts.test.yml"

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
prom_port=$(free_port)
cat > "$work/prometheus.yml" <<YML
global:
  scrape_interval: 250ms
  scrape_timeout: 200ms
scrape_configs:
  - job_name: moetrain
    static_configs:
      - targets: ['127.0.0.1:$port']
YML
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address="127.0.0.1:$prom_port" > "$work/prometheus.log" 2>&1 &
prom_pid=$!
on_exit "kill $prom_pid 2>/dev/null; wait $prom_pid 2>/dev/null"
api="http://127.0.0.1:$prom_port"
for _ in $(seq 100); do
  curl -sf "$api/-/ready" > /dev/null && break
  sleep 0.2
done
curl -sf "$api/-/ready" > /dev/null || fail "Prometheus did not start: $(tail -3 "$work/prometheus.log")"

start=$(date +%s)
# shellcheck disable=SC2086
$MOETRAIN_MPIRUN -np 2 "$MOETRAIN_BIN" "${TINY_ARGS[@]}" --output-dir "$work/run" --max-steps 60 --set log.every=1 \
  --set train.eval_every=20 --set train.eval_batches=1 --set checkpoint.every=30 --set train.threads=1 \
  --set log.prometheus_port="$port" --set log.peak_tflops=1 > "$work/train.log" &
train_pid=$!
on_exit "kill $train_pid 2>/dev/null"
# The endpoint's text, once a few steps are done, for promtool.
for _ in $(seq 300); do
  grep -q '^step 5/' "$work/train.log" 2>/dev/null && break
  sleep 0.1
done
curl -sf "http://127.0.0.1:$port/metrics" > "$work/metrics.txt" || fail "the endpoint did not answer"
wait $train_pid || fail "training failed: $(tail -3 "$work/train.log")"
grep -q "Prometheus metrics: http://127.0.0.1:$port/metrics" "$work/train.log" || fail "no endpoint line"
promtool check metrics < "$work/metrics.txt" || fail "promtool check metrics refused the endpoint's text"
echo "promtool check metrics: $(grep -c '^# TYPE' "$work/metrics.txt") metric families accepted"
sleep 1  # Prometheus commits the last scrapes

python3 - "$api" "$work" "$start" "$monitoring/grafana-dashboard.json" <<'PY'
import json, re, sys, time, urllib.parse, urllib.request
api, work, start, dashboard = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]

def query(expr, at=None):
    params = {"query": expr}
    if at is not None:
        params["time"] = str(at)
    url = api + "/api/v1/query?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url) as r:
        body = json.load(r)
    if body["status"] != "success":
        sys.exit(f"FAIL: query {expr!r}: {body}")
    return body["data"]

now = time.time()
window = f"[{int(now - start) + 5}s]"
def raw(name):
    result = query(name + window, now)["result"]
    if len(result) != 1:
        sys.exit(f"FAIL: {name}: wanted one series, got {len(result)}")
    labels = result[0]["metric"]
    return labels, {float(t): float(v) for t, v in result[0]["values"]}

labels, steps = raw("moetrain_step")
records = [json.loads(line) for line in open(work + "/run/metrics.jsonl")]
# The loss, and MFU (log.peak_tflops is set), at each scraped step.
for metric, key in (("moetrain_loss", "loss"), ("moetrain_model_flops_utilization_ratio", "mfu")):
    _, values = raw(metric)
    jsonl = {rec["step"]: rec[key] for rec in records if "loss" in rec}
    scraped = sorted({int(steps[t]): values[t] for t in steps if t in values}.items())
    bad = [(s, v, jsonl.get(s)) for s, v in scraped if jsonl.get(s) != v]
    if bad:
        sys.exit(f"FAIL: {key} differs from metrics.jsonl at (step, prometheus, jsonl): {bad[:5]}")
    if len(scraped) < 5:
        sys.exit(f"FAIL: only {len(scraped)} distinct steps were scraped")
    if key == "mfu" and not all(0 < v < 1 for _, v in scraped):
        sys.exit(f"FAIL: MFU outside (0, 1): {scraped[:5]}")
for key in ("run", "rank", "job", "instance"):
    if key not in labels:
        sys.exit(f"FAIL: moetrain_step lacks label {key}: {labels}")
print(f"Prometheus scraped {len(scraped)} distinct steps ({scraped[0][0]}..{scraped[-1][0]}); "
      f"the loss and MFU at each equal metrics.jsonl's (labels {dict(sorted(labels.items()))})")

with urllib.request.urlopen(api + "/api/v1/label/__name__/values") as r:
    served = {n for n in json.load(r)["data"] if n.startswith("moetrain_")}
exprs = [t["expr"] for p in json.load(open(dashboard))["panels"] for t in p["targets"]]
for expr in exprs:
    q = expr.replace("$run", ".*")
    query(q, now)
    for name in re.findall(r"\bmoetrain_[a-z_]+", q):
        if name not in served:
            sys.exit(f"FAIL: the dashboard's query {expr!r} names {name}, which the endpoint does not serve")
print(f"the dashboard's {len(exprs)} queries run, and name only metrics the endpoint serves")
PY

# A busy port: one line, exit 2, before any step; under mpirun every rank
# stops (no hang).
busy=$(free_port)
python3 -c 'import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(); time.sleep(120)' "$busy" &
holder=$!
on_exit "kill $holder 2>/dev/null"
sleep 0.5
expect_error "log.prometheus_port: rank 0: Prometheus endpoint: cannot listen on 127.0.0.1:$busy (is the port in use" \
  "${TINY_ARGS[@]}" --output-dir "$work/busy" --max-steps 2 --set log.prometheus_port="$busy"
[[ ! -e "$work/busy/metrics.jsonl" ]] || fail "a run with a busy port started training"
rc=0
# shellcheck disable=SC2086
timeout 120 $MOETRAIN_MPIRUN -np 2 "$MOETRAIN_BIN" "${TINY_ARGS[@]}" --output-dir "$work/busy2" --max-steps 2 \
  --set log.prometheus_port="$busy" > "$work/busy2.out" 2> "$work/busy2.err" || rc=$?
echo "[$rc] $(grep moetrain: "$work/busy2.err")"
[[ $rc -ne 0 && $rc -ne 124 ]] || fail "mpirun -np 2 with a busy port: exit $rc"
grep -q "cannot listen on 127.0.0.1:$busy" "$work/busy2.err" || fail "mpirun -np 2: no line naming the port"
echo "PASS"
