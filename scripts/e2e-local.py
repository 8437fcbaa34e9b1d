#!/usr/bin/env python3
"""The local default end to end, the way a user runs it (issue 16's scenario):

make up -> both printed URLs answer /predict with the model's label and score ->
a burst at api_url starts more than one Lambda environment (cold starts), every
answer right, and requests over the concurrency limit are throttled -> CPU load on
service_url makes the HPA add a pod and the Service send it requests -> make up
again changes nothing -> `bench check` passes against the three URLs and `bench
run --profile spike` writes its results and report, with the Lambda's cold start read
from its REPORT lines and matched to the request it delayed -> router_url answers through either backend and, with the
Lambda front killed, fails over to Kubernetes with no failed request -> make down
leaves no process of ours and no listening port.

It runs its own stack (`e2e`, shortened HPA/kubelet periods, a 3-environment
Lambda limit) on its own moto and registry ports, so a stack a developer has up is
left alone. Stdlib only; `make test` runs it after the cargo tests.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug"
MOTO_PORT = os.environ.get("E2E_MOTO_PORT", "5190")
REGISTRY_PORT = os.environ.get("E2E_REGISTRY_PORT", "5191")
LAMBDA_LIMIT = 3
TEXTS = ["a wonderful film", "a dull, tedious and boring mess", "it was fine"]
MAKE_VARS = [f"MOTO_PORT={MOTO_PORT}", f"REGISTRY_PORT={REGISTRY_PORT}"]


def log(msg):
    print(f"e2e-local: {msg}", flush=True)


def fail(msg):
    raise AssertionError(msg)


def run(args, env, check=True, timeout=900):
    log("$ " + " ".join(args))
    p = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    out = p.stdout + p.stderr
    print(out, flush=True)
    if check and p.returncode != 0:
        fail(f"{' '.join(args)} exited {p.returncode}")
    return p.returncode, out


def post(url, body, timeout=30):
    """POST JSON; returns (status, headers, parsed body or text). Never raises on HTTP."""
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST",
        headers={"content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, headers, raw = r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        status, headers, raw = e.code, dict(e.headers), e.read()
    try:
        return status, {k.lower(): v for k, v in headers.items()}, json.loads(raw)
    except ValueError:
        return status, {k.lower(): v for k, v in headers.items()}, raw.decode(errors="replace")


def expected_predictions(model_dir):
    p = subprocess.run(
        [str(BIN / "model-cache"), "predict", "--model-dir", str(model_dir)],
        input="\n".join(TEXTS) + "\n", capture_output=True, text=True, check=True,
    )
    return [json.loads(line) for line in p.stdout.splitlines() if line.strip()]


def check_answer(where, got, want):
    if got.get("label") != want["label"] or abs(got.get("score", -1) - want["score"]) > 1e-5:
        fail(f"{where}: got {got}, want {want}")


def check_every_url(urls, want):
    for name, url in urls.items():
        for text, w in zip(TEXTS, want):
            status, _, body = post(url + "predict", {"text": text})
            if status != 200:
                fail(f"{name}: POST /predict {text!r} -> {status} {body}")
            check_answer(name, body, w)
        log(f"{name} answers every known text right")
    for backend in ("lambda", "k8s", "auto"):
        status, headers, body = post(urls["router_url"] + f"predict?backend={backend}", {"text": TEXTS[0]})
        if status != 200 or "x-attempts" not in headers:
            fail(f"router_url ?backend={backend}: {status} {headers} {body}")
        if backend != "auto" and headers.get("x-backend") != backend:
            fail(f"router_url ?backend={backend} answered from {headers.get('x-backend')}")
        check_answer(f"router_url ?backend={backend}", body, want[0])
    log("router_url answers from each backend, with x-backend and x-attempts")


def check_router_fails_over(urls, want):
    """The Lambda front killed: `auto` answers every request from Kubernetes."""
    pids = [int(json.loads(f.read_text())["pid"])
            for f in (ROOT / ".stack" / "e2e.local.apigw").glob("*/front.pid")]
    if not pids:
        fail("no API Gateway front pid under .stack/e2e.local.apigw")
    for pid in pids:
        os.kill(pid, 9)
    backends = []
    for _ in range(20):
        status, headers, body = post(urls["router_url"] + "predict?backend=auto", {"text": TEXTS[0]})
        if status != 200:
            fail(f"router_url failed with the Lambda front down: {status} {headers} {body}")
        check_answer("router_url failover", body, want[0])
        backends.append(headers.get("x-backend"))
    if backends[-1] != "k8s":
        fail(f"router_url did not fail over to k8s: {backends}")
    log(f"Lambda front killed: 20 of 20 requests answered through the router ({backends.count('k8s')} by k8s)")


def lambda_burst(url, want, size):
    """`size` requests released at once; returns the replies."""
    barrier = threading.Barrier(size)
    replies = [None] * size

    def one(i):
        barrier.wait()
        replies[i] = post(url + "predict", {"text": TEXTS[0]})

    threads = [threading.Thread(target=one, args=(i,)) for i in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for status, headers, body in replies:
        if status == 200:
            check_answer("api_url burst", body, want[0])
        elif headers.get("x-lambda-error-type") != "TooManyRequestsException":
            fail(f"api_url burst: {status} {headers} {body}")
    return replies


def check_lambda_concurrency(url, want):
    replies = lambda_burst(url, want, 2 * LAMBDA_LIMIT + 2)
    cold = {h.get("x-lambda-instance") for s, h, _ in replies if s == 200 and h.get("x-lambda-cold") == "true"}
    if len(cold) < 2:
        fail(f"a burst at a cold function started {len(cold)} environment(s): {replies}")
    log(f"burst: {len(cold)} cold starts, every answer right")
    # Throttling needs every environment busy at once; a warm one answers in
    # milliseconds, so bigger bursts are tried until one goes over the limit.
    for size in (2 * LAMBDA_LIMIT + 2, 16, 32, 64):
        throttled = [r for r in lambda_burst(url, want, size) if r[0] != 200]
        if throttled:
            status, headers, body = throttled[0]
            # API Gateway answers a throttled Lambda as an integration failure.
            if status != 500 or body != {"message": "Internal Server Error"}:
                fail(f"throttled request: {status} {body}")
            log(f"over the limit of {LAMBDA_LIMIT}: {len(throttled)} of {size} throttled "
                f"({status}, x-lambda-error-type {headers['x-lambda-error-type']})")
            return
    fail(f"no request was throttled over a concurrency limit of {LAMBDA_LIMIT}")


def check_bench(env, out):
    """`make check`, then a spike whose idle part outlasts the Lambda keep-alive, so
    its burst meets a cold function."""
    run(["make", "check", *MAKE_VARS], env)
    run([str(BIN / "bench"), "run", "--profile", "spike", "--duration", "10s", "--burst", "3s",
         "--rate", "5", "--out", str(out)], env)
    results = json.loads((out / "results.json").read_text())
    for name in ("lambda", "k8s", "router"):
        b = results["backends"].get(name)
        if not b or b["ok"] != b["requests"] or b["requests"] != 15:
            fail(f"bench run: {name}: {b}")
    cold = [c for c in results["cold_starts"] if c["source"] == "report"]
    if not cold or not any(c["requests"] for c in cold):
        fail(f"bench run: no cold start from a REPORT line matched to a request: {results['cold_starts']}")
    lam = results["platform"].get("lambda") or {}
    if lam.get("invocations", 0) < 15 or lam.get("billed_gb_s", 0) <= 0:
        fail(f"bench run: the Lambda's REPORT lines were not counted: {lam}")
    if results["platform"].get("k8s", {}).get("pod_seconds", 0) <= 0:
        fail(f"bench run: no pod-seconds: {results['platform']}")
    for f in ("report.md",):
        if not (out / f).is_file():
            fail(f"bench run wrote no {f} in {out}")
    log(f"bench run: {len(cold)} cold start(s) from REPORT lines, "
        f"{lam['invocations']} invocations, {lam['billed_gb_s']:.3f} GB-s; report in {out}")


def status(env):
    p = subprocess.run([str(BIN / "stack"), "status", "--json"], cwd=ROOT, env=env,
                       capture_output=True, text=True)
    if p.returncode != 0:
        fail(f"stack status exited {p.returncode}: {p.stdout}{p.stderr}")
    return json.loads(p.stdout)


def requests_served(pod_address):
    with urllib.request.urlopen(f"http://{pod_address}/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(
        float(m.group(1))
        for m in re.finditer(r'^sentiment_http_requests_total\{[^}]*route="/predict"[^}]*\} (\S+)', text, re.M)
    )


def check_hpa_scales_up(url, env, want):
    before = status(env)
    pods_before = {p["name"] for p in before["pods"]}
    log(f"before load: {len(pods_before)} pod(s), HPA {before['hpa']}")
    stop = threading.Event()
    errors = []

    def load():
        while not stop.is_set():
            s, _, body = post(url + "predict", {"inputs": TEXTS * 8})
            if s != 200:
                errors.append((s, body))

    workers = [threading.Thread(target=load) for _ in range(4)]
    for w in workers:
        w.start()
    try:
        deadline = time.time() + 180
        while True:
            s = status(env)
            ready = [p for p in s["pods"] if p["ready"]]
            log(f"under load: HPA {s['hpa']['current_cpu_percent']}% -> desired "
                f"{s['hpa']['desired_replicas']}, {len(ready)} ready pod(s)")
            new = [p for p in ready if p["name"] not in pods_before]
            if new:
                break
            if time.time() > deadline:
                fail(f"the HPA added no ready pod within 180 s under load: {s}")
            time.sleep(2)
        # The Service (the front over Ready pods) now sends the new pod requests.
        deadline = time.time() + 30
        while requests_served(new[0]["address"]) == 0:
            if time.time() > deadline:
                fail(f"the new pod {new[0]['name']} got no request through service_url")
            time.sleep(1)
        log(f"HPA scaled up: {new[0]['name']} is Ready and serves service_url's requests")
    finally:
        stop.set()
        for w in workers:
            w.join()
    if errors:
        fail(f"service_url failed under load: {errors[:3]}")
    status_text = run([str(BIN / "stack"), "status"], env)[1]
    if "HPA" not in status_text:
        fail("stack status shows no HPA")


def our_processes(marker):
    """Pids whose command line names this stack's state (fronts, control plane, pods)."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmd:
            pids.append((int(d.name), cmd.strip()))
    return pids


def listening_ports():
    ports = set()
    for f in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(f).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if parts[3] == "0A":  # LISTEN
                ports.add(int(parts[1].rsplit(":", 1)[1], 16))
    return ports


def main():
    tmp = Path(tempfile.mkdtemp(prefix="e2e-local-"))
    config = tmp / "stack.json"
    config.write_text(json.dumps({
        "stack": "e2e",
        "prefix": "e2e",
        "k8s": {
            "threads": 1,
            "min_replicas": 1,
            "max_replicas": 2,
            "cpu_target_percent": 20,
            "scale_down_window_s": 30,
            "model_env": {"MODEL_DIR": "/models", "MODEL_THREADS": "1"},
        },
    }))
    env = dict(os.environ)
    for k in ("STACK_TARGET", "STACK_STATE_DIR", "KUBECONFIG", "STACK_KUBE", "STACK_REGISTRY"):
        env.pop(k, None)
    env.update({
        "STACK_CONFIG": str(config),
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{MOTO_PORT}",
        "STACK_LAMBDA_CONCURRENCY": str(LAMBDA_LIMIT),
        "STACK_HPA_SYNC_MS": "2000",
        "STACK_KUBELET_SYNC_MS": "1000",
        # Idle environments go after 5 s, so the bench's spike starts cold.
        "STACK_LAMBDA_KEEP_ALIVE_SECS": "5",
        "BENCH_STACK_BIN": str(BIN / "stack"),
    })
    marker = "e2e.local"
    started = time.time()
    try:
        run(["make", "up", *MAKE_VARS], env)
        log(f"make up took {time.time() - started:.0f} s")
        urls = {}
        for name in ("api_url", "service_url", "router_url"):
            urls[name] = run([str(BIN / "stack"), "outputs", name], env)[1].strip().rstrip("/") + "/"
            if not urls[name].startswith("http://127.0.0.1:"):
                fail(f"{name} is not a loopback URL: {urls[name]!r}")
        want = expected_predictions(ROOT / ".cache" / "fixtures" / "tiny")
        check_lambda_concurrency(urls["api_url"], want)
        check_every_url(urls, want)
        check_hpa_scales_up(urls["service_url"], env, want)
        # The fronts and the control plane (Lambda environments come and go by themselves).
        def daemons():
            return {pid for pid, cmd in our_processes(marker) if cmd.split()[0].endswith("/stack")}

        running = daemons()
        pods = {p["pid"] for p in status(env)["pods"]}
        _, again = run(["make", "up", *MAKE_VARS], env)
        if "No changes" not in again:
            fail("a second make up planned changes")
        if daemons() != running:
            fail("a second make up restarted a front or the control plane")
        # The HPA may scale the load test's extra pod away meanwhile (30 s window): a
        # pod may go, but none may be new (a restart would be a new process).
        new = {p["pid"] for p in status(env)["pods"]} - pods
        if new:
            fail(f"a second make up restarted pods (new pids {sorted(new)})")
        check_bench(env, tmp / "bench")
        check_router_fails_over(urls, want)
        ports = {int(u.rsplit(":", 1)[1].strip("/")) for u in urls.values()}
        ports |= {int(MOTO_PORT), int(REGISTRY_PORT)}
        ports |= {int(p["address"].rsplit(":", 1)[1]) for p in status(env)["pods"]}
        ours = our_processes(marker)
        ours += [(p["pid"], p["name"]) for p in status(env)["pods"]]
        for name in (f"moto-{MOTO_PORT}", f"registry-{REGISTRY_PORT}"):
            ours.append((int((ROOT / ".stack" / f"{name}.pid").read_text()), name))
        log(f"before make down: {len(ours)} process(es) of this stack, ports {sorted(ports)}")
    except BaseException:
        run(["make", "down", *MAKE_VARS], env, check=False)
        raise
    run(["make", "down", *MAKE_VARS], env)
    time.sleep(1)
    left = [(pid, cmd) for pid, cmd in ours + our_processes(marker) if Path(f"/proc/{pid}").exists()]
    if left:
        fail(f"make down left processes running: {left}")
    still = ports & listening_ports()
    if still:
        fail(f"make down left ports listening: {sorted(still)}")
    log(f"passed in {time.time() - started:.0f} s")
    # Kept when it fails: the stack config and the bench's results are in it.
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        log(f"FAILED: {e}")
        sys.exit(1)
