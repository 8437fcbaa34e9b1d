"""The Python reference the Rust server is measured against: the seed design.

FastAPI + transformers pipeline("sentiment-analysis") on PyTorch, one uvicorn worker,
loading the same checkpoint directory, with the same JSON as sentiment-server:
{"text": "..."} -> {"label", "score"}; {"inputs": [...]} -> a list.

    MODEL_DIR=.cache/fixtures/full-f32 uvicorn reference_server:app --port 8081 --workers 1

Used only by bench/run.sh, from its own virtualenv (.venv-bench/); never by the tests.
"""

import os

import torch
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel
from transformers import pipeline

MODEL_DIR = os.environ["MODEL_DIR"]
THREADS = int(os.environ.get("MODEL_THREADS", os.cpu_count() or 1))
torch.set_num_threads(THREADS)

classifier = pipeline(
    "sentiment-analysis", model=MODEL_DIR, tokenizer=MODEL_DIR, device=-1
)
app = FastAPI()


class Request(BaseModel):
    text: str | None = None
    inputs: list[str] | None = None


@app.get("/healthz")
def healthz():
    return {"status": "alive"}


@app.post("/predict")
def predict(request: Request):
    # A sync handler runs in FastAPI's thread pool, like the seed server.
    if request.text is not None:
        if not request.text.strip():
            raise HTTPException(422, "text is empty")
        out = classifier(request.text, truncation=True)[0]
        return {"label": out["label"], "score": out["score"]}
    if request.inputs:
        outs = classifier(request.inputs, truncation=True)
        return [{"label": o["label"], "score": o["score"]} for o in outs]
    raise HTTPException(422, "send text or inputs")
