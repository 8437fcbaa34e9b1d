#!/usr/bin/env python3
"""Side-by-side benchmark: sentiment-server (Rust) vs the Python reference server.

Standard library only (runs on the system python3); the load generator is `hey`.
For each server, in one run: cold start (spawn -> first 200 from /predict, median of
5), latency percentiles at concurrency 1 for a ~10-word and a ~120-word text, requests/s
and p99 at concurrency 8 and 32 for --duration seconds, and peak RSS (VmHWM).

Interleaved, because a shared machine's speed drifts by 2-3x over seconds to minutes
(other tenants on the same physical cores): every server runs at once, and each
measurement is cut into --rounds slices that take turns across the servers, so each
sees the same mix of fast and slow moments. Percentiles are over the pooled
per-request latencies (`hey -o csv`). Writes a Markdown report and prints it.
"""

import argparse
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

SHORT = "The acting was superb and the story kept me hooked until the end."
LONG = " ".join(
    [
        "I went into this film with low expectations, having read several lukewarm reviews,",
        "but within the first twenty minutes it had completely won me over. The lead actor",
        "delivers a quiet, controlled performance that makes every small gesture count, and",
        "the supporting cast is uniformly strong, especially the younger sister whose scenes",
        "carry most of the emotional weight. The cinematography favours long, patient takes",
        "of the coastline, which could have felt indulgent but instead gives the story room",
        "to breathe. If I have a complaint it is that the final act resolves a little too",
        "neatly, tying up threads that might have been more powerful left loose. Still, this",
        "is a thoughtful, beautifully made drama that I will happily watch again soon.",
    ]
)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url, text, timeout=5.0):
    body = json.dumps({"text": text}).encode()
    req = urllib.request.Request(
        url, data=body, headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status


class Target:
    def __init__(self, name, argv, env, port):
        self.name, self.argv, self.env, self.port = name, argv, env, port
        self.url = f"http://127.0.0.1:{port}/predict"
        self.proc = None

    def spawn(self):
        self.proc = subprocess.Popen(
            self.argv,
            env={**os.environ, **self.env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return self.proc

    def wait_first_200(self, limit=180.0):
        started = time.monotonic()
        while time.monotonic() - started < limit:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}")
            try:
                if post(self.url, SHORT) == 200:
                    return time.monotonic() - started
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.005)
        raise RuntimeError(f"{self.name}: no 200 within {limit} s")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def peak_rss_mib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return float("nan")


def hey(url, text, concurrency, requests=None, duration=None):
    """One `hey` run; returns the latencies (ms) of the answered requests, their status
    codes, and the wall time it took."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({"text": text}, f)
        body = f.name
    argv = ["hey", "-o", "csv", "-c", str(concurrency), "-m", "POST", "-T", "application/json", "-D", body]
    argv += ["-n", str(requests)] if requests else ["-z", f"{duration}s"]
    started = time.monotonic()
    out = subprocess.run(argv + [url], capture_output=True, text=True, check=True).stdout
    wall = time.monotonic() - started
    os.unlink(body)
    latencies, codes = [], {}
    for row in out.splitlines()[1:]:
        fields = row.split(",")
        latencies.append(float(fields[0]) * 1000)
        codes[fields[6]] = codes.get(fields[6], 0) + 1
    # Connection-level failures (resets, timeouts) get no CSV row.
    if requests and len(latencies) < requests:
        codes["failed"] = requests - len(latencies)
    return {"latencies": latencies, "codes": codes, "wall": wall}


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else None


def summarize(slices, duration):
    latencies = [ms for s in slices for ms in s["latencies"]]
    codes = {}
    for s in slices:
        for code, n in s["codes"].items():
            codes[code] = codes.get(code, 0) + n
    result = {f"p{q}": percentile(latencies, q) for q in (50, 90, 99)}
    # Throughput over the load generator's own window (-z), not hey's start-up.
    result["rps"] = len(latencies) / (duration * len(slices)) if duration else None
    result["codes"] = codes
    return result


def cold_starts(targets, args):
    """Spawn -> first 200, taking turns across the servers, --cold-starts times each."""
    times = {t.name: [] for t in targets}
    for _ in range(args.cold_starts):
        for target in targets:
            target.spawn()
            try:
                times[target.name].append(target.wait_first_200())
            finally:
                target.stop()
    return times


def kernel_of(target):
    try:
        with urllib.request.urlopen(target.url.replace("/predict", "/info"), timeout=5) as r:
            model = json.load(r).get("model") or {}
        return f"{model.get('compute_dtype')} ({model.get('kernel')})"
    except (OSError, ValueError):
        return None


def measure_all(targets, args):
    results = {t.name: {} for t in targets}
    for name, colds in cold_starts(targets, args).items():
        results[name]["cold_start_s"] = statistics.median(colds)
        results[name]["cold_starts"] = colds
    for target in targets:
        target.spawn()
    try:
        for target in targets:
            target.wait_first_200()
            results[target.name]["kernel"] = kernel_of(target)
            for _ in range(20):
                post(target.url, LONG)
        phases = [
            ("c1_short", SHORT, 1, max(1, args.c1_requests // args.rounds), None),
            ("c1_long", LONG, 1, max(1, args.c1_requests // args.rounds), None),
            ("c8", SHORT, 8, None, max(1, args.duration // args.rounds)),
            ("c32", SHORT, 32, None, max(1, args.duration // args.rounds)),
        ]
        for key, text, concurrency, requests, duration in phases:
            slices = {t.name: [] for t in targets}
            for round_ in range(args.rounds):
                # Rotate who goes first, so no server always follows the same one.
                shift = round_ % len(targets)
                for target in targets[shift:] + targets[:shift]:
                    slices[target.name].append(hey(target.url, text, concurrency, requests, duration))
            for name, runs in slices.items():
                results[name][key] = summarize(runs, duration)
            print(f"{key}: " + json.dumps({n: {k: v for k, v in results[n][key].items() if k != "codes"} for n in slices}), file=sys.stderr)
        for target in targets:
            results[target.name]["peak_rss_mib"] = target.peak_rss_mib()
    finally:
        for target in targets:
            target.stop()
    return results


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def report(results, args, load_before, load_after):
    rust_names = [n for n in results if n != "python-reference"]
    py = results.get("python-reference")
    rows = [
        ("cold start, spawn → first 200 (s, median of %d)" % args.cold_starts, "cold_start_s", None, "{:.3f}"),
        ("c=1 ~10 words p50 (ms)", "c1_short", "p50", "{:.1f}"),
        ("c=1 ~10 words p90 (ms)", "c1_short", "p90", "{:.1f}"),
        ("c=1 ~10 words p99 (ms)", "c1_short", "p99", "{:.1f}"),
        ("c=1 ~120 words p50 (ms)", "c1_long", "p50", "{:.1f}"),
        ("c=1 ~120 words p90 (ms)", "c1_long", "p90", "{:.1f}"),
        ("c=1 ~120 words p99 (ms)", "c1_long", "p99", "{:.1f}"),
        ("c=8 requests/s (%d s)" % args.duration, "c8", "rps", "{:.1f}"),
        ("c=8 p99 (ms)", "c8", "p99", "{:.1f}"),
        ("c=32 requests/s (%d s)" % args.duration, "c32", "rps", "{:.1f}"),
        ("c=32 p50 (ms)", "c32", "p50", "{:.1f}"),
        ("c=32 p99 (ms)", "c32", "p99", "{:.1f}"),
        ("peak RSS (MiB)", "peak_rss_mib", None, "{:.0f}"),
    ]
    kernels = {n: r.get("kernel") for n, r in results.items() if r.get("kernel")}

    def cell(res, key, sub, fmt):
        if res is None:
            return None, "n/a"
        v = res[key][sub] if sub else res[key]
        return v, fmt.format(v) if v is not None else "n/a"

    header = " | ".join(rust_names)
    ratios = " | ".join(f"{n} / Python" for n in rust_names)
    lines = [
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.node()}: "
        f"{os.cpu_count()} CPUs, load average {load_before} before, {load_after} after. "
        f"Fixture: `{args.model_dir}`. Servers up together, each measurement interleaved "
        f"across them in {args.rounds} rounds.",
        "",
        f"| measure | {header} | Python reference | {ratios} |",
        "|---|" + "---:|" * (2 * len(rust_names) + 1),
    ]
    for label, key, sub, fmt in rows:
        pv, ps = cell(py, key, sub, fmt)
        values, shares = [], []
        for name in rust_names:
            rv, rs = cell(results[name], key, sub, fmt)
            values.append(rs)
            shares.append(f"{rv / pv:.2f}×" if rv is not None and pv else "n/a")
        lines.append(f"| {label} | {' | '.join(values)} | {ps} | {' | '.join(shares)} |")
    bad = {n: {k: r[k]["codes"] for k in ("c1_short", "c1_long", "c8", "c32")} for n, r in results.items()}
    lines += ["", f"Status codes per run: `{json.dumps(bad)}`"]
    if kernels:
        lines += ["", f"Dense-layer kernels (from `/info`): `{json.dumps(kernels)}`"]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rust", required=True, help="release sentiment-server binary")
    ap.add_argument("--venv", help="virtualenv with torch, transformers, fastapi, uvicorn")
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--duration", type=int, default=20)
    ap.add_argument("--cold-starts", type=int, default=5)
    ap.add_argument("--c1-requests", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5, help="slices each measurement takes turns in")
    ap.add_argument("--rust-flags", default="", help="extra sentiment-server flags (every variant)")
    ap.add_argument(
        "--variant",
        action="append",
        help="NAME=FLAGS: a sentiment-server configuration to measure, e.g. "
        "'bf16=--precision bf16' (repeatable; default: f32, bf16x3 and bf16)",
    )
    ap.add_argument("--out", help="also write the report here")
    args = ap.parse_args()

    load_before = loadavg()
    targets = []
    for variant in args.variant or ["f32=", "bf16x3=--precision bf16x3", "bf16=--precision bf16"]:
        name, _, flags = variant.partition("=")
        port = free_port()
        targets.append(Target(
            f"sentiment-server {name}",
            [args.rust, "--model-dir", args.model_dir, "--bind", f"127.0.0.1:{port}"]
            + args.rust_flags.split()
            + flags.split(),
            {"RUST_LOG": "warn"},
            port,
        ))
    if args.venv:
        port = free_port()
        here = os.path.dirname(os.path.abspath(__file__))
        targets.append(Target(
            "python-reference",
            [os.path.join(args.venv, "bin", "uvicorn"), "reference_server:app", "--app-dir", here,
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--log-level", "warning"],
            {"MODEL_DIR": os.path.abspath(args.model_dir), "TOKENIZERS_PARALLELISM": "false"},
            port,
        ))
    results = measure_all(targets, args)
    text = report(results, args, load_before, loadavg())
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
        with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
