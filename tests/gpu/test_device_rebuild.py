"""A rebuild on CUDA reads back the rows it computes as before (tensor_keys) and equals a full rebuild: the CUDA provider
picks cuDNN's algorithms by heuristic, so a graph computes a tensor the same way in every session; the device reduction
adds its blocks' float64 sums in whatever order they finish, so the figures agree to that rounding, not bit for bit.
Needs ONNX Runtime's CUDA provider: runs on the GPU host."""

from __future__ import annotations

import pandas as pd
import pytest

from engine.backends.onnxrt import cuda_available
from engine.compare.metrics import METRIC_COLUMNS
from tests.engine.test_tensor_keys import rebuilt_both_ways

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not cuda_available(), reason="needs ONNX Runtime's CUDA provider")]


def test_a_cuda_rebuild_reads_back_what_it_did_not_change_and_equals_a_full_one(tmp_path, monkeypatch):
    fast, full = rebuilt_both_ways(tmp_path, monkeypatch, "cuda")
    assert 0 < fast.summary.timings["tensors_reused"] < len(fast.layers)
    cols = ["tensor", *METRIC_COLUMNS, "introduced_db"]
    pd.testing.assert_frame_equal(fast.layers[cols].reset_index(drop=True), full.layers[cols].reset_index(drop=True),
                                  check_exact=False, rtol=1e-9, atol=0)
