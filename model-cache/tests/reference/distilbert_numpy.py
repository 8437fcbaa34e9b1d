"""Independent DistilBERT sequence-classification forward pass in numpy (float64).

Reads a Hugging Face checkpoint directory (config.json + model.safetensors, parsed
here by hand) and, on stdin, JSON {"ids": [[token ids], ...]}. Each sequence is run
alone, unpadded, the way DistilBertForSequenceClassification computes it in eval
mode. Prints {"logits": [[...], ...]}.
"""
import json
import math
import struct
import sys

import numpy as np


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    base = 8 + header_len
    tensors = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        start, end = meta["data_offsets"]
        raw = data[base + start : base + end]
        dtype = meta["dtype"]
        if dtype == "F32":
            arr = np.frombuffer(raw, dtype="<f4")
        elif dtype == "F16":
            arr = np.frombuffer(raw, dtype="<f2")
        elif dtype == "BF16":
            arr = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view("<f4")
        else:
            raise SystemExit(f"unsupported dtype {dtype} for {name}")
        tensors[name] = arr.astype(np.float64).reshape(meta["shape"])
    return tensors


def layer_norm(x, w, b, eps=1e-12):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


_erf = np.frompyfunc(math.erf, 1, 1)


def gelu(x):
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))


def softmax(x):
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def forward(t, cfg, ids):
    p = "distilbert." if "distilbert.embeddings.word_embeddings.weight" in t else ""
    lin = lambda x, name: x @ t[name + ".weight"].T + t[name + ".bias"]
    n = len(ids)
    x = t[p + "embeddings.word_embeddings.weight"][ids] + t[p + "embeddings.position_embeddings.weight"][:n]
    x = layer_norm(x, t[p + "embeddings.LayerNorm.weight"], t[p + "embeddings.LayerNorm.bias"])
    heads, dim = cfg["n_heads"], cfg["dim"]
    dh = dim // heads
    for i in range(cfg["n_layers"]):
        l = f"{p}transformer.layer.{i}."
        split = lambda y: y.reshape(n, heads, dh).transpose(1, 0, 2)
        q = split(lin(x, l + "attention.q_lin")) / math.sqrt(dh)
        k = split(lin(x, l + "attention.k_lin"))
        v = split(lin(x, l + "attention.v_lin"))
        ctx = softmax(q @ k.transpose(0, 2, 1)) @ v
        ctx = ctx.transpose(1, 0, 2).reshape(n, dim)
        x = layer_norm(lin(ctx, l + "attention.out_lin") + x, t[l + "sa_layer_norm.weight"], t[l + "sa_layer_norm.bias"])
        h = lin(gelu(lin(x, l + "ffn.lin1")), l + "ffn.lin2")
        x = layer_norm(h + x, t[l + "output_layer_norm.weight"], t[l + "output_layer_norm.bias"])
    pooled = np.maximum(lin(x[0], "pre_classifier"), 0.0)
    return lin(pooled, "classifier")


def main():
    directory = sys.argv[1]
    cfg = json.load(open(f"{directory}/config.json"))
    tensors = read_safetensors(f"{directory}/model.safetensors")
    request = json.load(sys.stdin)
    logits = [forward(tensors, cfg, np.array(ids)).tolist() for ids in request["ids"]]
    json.dump({"logits": logits}, sys.stdout)


if __name__ == "__main__":
    main()
