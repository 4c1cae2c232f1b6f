"""The branchless gated candidate (what GPUs run) computes what the If-gated one and emission compute."""

from __future__ import annotations

import random

import numpy as np

from engine.backends.onnxrt import OnnxRuntimeBackend
from engine.diagnose.gated import gate_model
from engine.diagnose.gated_where import gate_model_where
from tests.engine.conftest import SAMPLES


def test_where_gates_equal_if_gates_bit_for_bit(all_int8):
    reference, candidate, units = all_int8
    feed = {"input": np.load(SAMPLES / "digits_eval.npz")["input"][:16]}
    backend = OnnxRuntimeBackend("cpu")
    for fp16 in (False, True):
        a, b = gate_model(reference, candidate, units, fp16), gate_model_where(reference, candidate, units, fp16)
        with backend.runner(a.model) as ra, backend.runner(b.model) as rb:
            rng = random.Random(fp16)
            for _ in range(4):
                off = [u[0] for u in rng.sample(units, rng.randint(0, len(units)))]
                ya = ra.infer({**feed, **a.feed(off)})["logits"]
                yb = rb.infer({**feed, **b.feed(off)})["logits"]
                assert np.array_equal(ya, yb), (fp16, off)
