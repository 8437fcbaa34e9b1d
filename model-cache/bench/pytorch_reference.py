"""The same measurements as `cargo bench -p model-cache`, with PyTorch + transformers
on the same checkpoint directory, for a side-by-side comparison.

Run by scripts/bench-model.sh inside .venv-bench (torch is never a test dependency).
argv: checkpoint dir, threads, and optionally `bf16` to run under
`torch.autocast("cpu", dtype=torch.bfloat16)` (oneDNN's AMX kernels where the CPU has
them), PyTorch's own bf16 route, to compare with model-cache's opt-in bf16 mode.
Prints one JSON object.
"""
import contextlib
import json
import resource
import sys
import time

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer


def rss_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def median(values):
    values = sorted(values)
    return values[len(values) // 2]


def timed(runs, fn):
    fn()
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return median(out)


def text_of(tokenizer, tokens):
    words = "the movie was great and the acting felt fresh but plot was slow".split()
    text = ""
    i = 0
    while True:
        candidate = (text + " " + words[i % len(words)]).strip()
        if len(tokenizer(candidate)["input_ids"]) > tokens:
            return text
        text = candidate
        i += 1


def main():
    directory, threads = sys.argv[1], int(sys.argv[2])
    precision = sys.argv[3] if len(sys.argv) > 3 else "f32"
    autocast = (
        (lambda: torch.autocast("cpu", dtype=torch.bfloat16))
        if precision == "bf16"
        else contextlib.nullcontext
    )
    torch.set_num_threads(threads)
    rss_before = rss_mib()
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForSequenceClassification.from_pretrained(directory).eval()
    first_load = time.perf_counter() - start
    rss_after = rss_mib()
    load = timed(5, lambda: AutoModelForSequenceClassification.from_pretrained(directory).eval())

    def classify(texts):
        with torch.inference_mode(), autocast():
            enc = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
            return torch.softmax(model(**enc).logits, dim=-1)

    short, long = text_of(tokenizer, 16), text_of(tokenizer, 128)
    p50_short = timed(31, lambda: classify([short]))
    p50_long = timed(15, lambda: classify([long]))
    tp = {b: b / timed(7, lambda: classify([short] * b)) for b in (8, 32)}
    json.dump(
        {
            "engine": f"pytorch {torch.__version__}",
            "precision": precision,
            "threads": threads,
            "first_load_ms": first_load * 1e3,
            "load_ms": load * 1e3,
            "rss_after_load_mib": rss_after,
            "rss_before_load_mib": rss_before,
            "batch1_16_p50_ms": p50_short * 1e3,
            "batch1_128_p50_ms": p50_long * 1e3,
            "batch8_seq_per_s": tp[8],
            "batch32_seq_per_s": tp[32],
        },
        sys.stdout,
    )
    print()


if __name__ == "__main__":
    main()
