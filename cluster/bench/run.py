#!/usr/bin/env python3
"""Side-by-side benchmark: sentiment-server (Rust) vs the Python reference server.

Standard library only (runs on the system python3); the load generator is `hey`.
For each server, in one run: cold start (spawn -> first 200 from /predict, median of
5), latency percentiles at concurrency 1 for a ~10-word and a ~120-word text, requests/s
and p99 at concurrency 8 and 32 for --duration seconds, and peak RSS (VmHWM).
Writes a Markdown report and prints it.
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
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({"text": text}, f)
        body = f.name
    argv = ["hey", "-c", str(concurrency), "-m", "POST", "-T", "application/json", "-D", body]
    argv += ["-n", str(requests)] if requests else ["-z", f"{duration}s"]
    out = subprocess.run(argv + [url], capture_output=True, text=True, check=True).stdout
    os.unlink(body)
    pct = {int(p): float(s) * 1000 for p, s in re.findall(r"(\d+)%+ in ([\d.]+) secs", out)}
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    status_part, _, error_part = out.partition("Error distribution:")
    codes = {int(c): int(n) for c, n in re.findall(r"\[(\d+)\]\s+(\d+) responses", status_part)}
    errors = sum(n for c, n in codes.items() if c != 200)
    # Connection-level failures (resets, timeouts) are listed apart from status codes.
    failures = sum(int(n) for n in re.findall(r"^\s+\[(\d+)\]\s", error_part, re.M))
    if failures:
        codes["failed"] = failures
    return {"p50": pct.get(50), "p90": pct.get(90), "p99": pct.get(99), "rps": rps, "non200": errors, "codes": codes}


def measure(target, args):
    result = {}
    colds = []
    for _ in range(args.cold_starts):
        target.spawn()
        try:
            colds.append(target.wait_first_200())
        finally:
            target.stop()
    result["cold_start_s"] = statistics.median(colds)
    result["cold_starts"] = colds
    target.spawn()
    try:
        target.wait_first_200()
        info_url = target.url.replace("/predict", "/info")
        try:
            with urllib.request.urlopen(info_url, timeout=5) as r:
                info = json.load(r)
            model = info.get("model") or {}
            result["kernel"] = f"{model.get('compute_dtype')} ({model.get('kernel')})"
        except (OSError, ValueError):
            result["kernel"] = None
        for _ in range(20):
            post(target.url, LONG)
        result["c1_short"] = hey(target.url, SHORT, 1, requests=args.c1_requests)
        result["c1_long"] = hey(target.url, LONG, 1, requests=args.c1_requests)
        for c in (8, 32):
            result[f"c{c}"] = hey(target.url, SHORT, c, duration=args.duration)
        result["peak_rss_mib"] = target.peak_rss_mib()
    finally:
        target.stop()
    return result


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
        f"Fixture: `{args.model_dir}`.",
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
    ap.add_argument("--rust-flags", default="", help="extra sentiment-server flags (every variant)")
    ap.add_argument(
        "--variant",
        action="append",
        help="NAME=FLAGS: a sentiment-server configuration to measure, e.g. "
        "'bf16=--precision bf16' (repeatable; default: f32= and bf16=--precision bf16)",
    )
    ap.add_argument("--out", help="also write the report here")
    args = ap.parse_args()

    load_before = loadavg()
    results = {}
    for variant in args.variant or ["f32=", "bf16=--precision bf16"]:
        name, _, flags = variant.partition("=")
        port = free_port()
        rust = Target(
            f"sentiment-server {name}",
            [args.rust, "--model-dir", args.model_dir, "--bind", f"127.0.0.1:{port}"]
            + args.rust_flags.split()
            + flags.split(),
            {"RUST_LOG": "warn"},
            port,
        )
        results[rust.name] = measure(rust, args)
        print(json.dumps(results[rust.name]), file=sys.stderr)
    if args.venv:
        port = free_port()
        here = os.path.dirname(os.path.abspath(__file__))
        py = Target(
            "python-reference",
            [os.path.join(args.venv, "bin", "uvicorn"), "reference_server:app", "--app-dir", here,
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--log-level", "warning"],
            {"MODEL_DIR": os.path.abspath(args.model_dir), "TOKENIZERS_PARALLELISM": "false"},
            port,
        )
        results["python-reference"] = measure(py, args)
        print(json.dumps(results["python-reference"]), file=sys.stderr)
    text = report(results, args, load_before, loadavg())
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
        with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
