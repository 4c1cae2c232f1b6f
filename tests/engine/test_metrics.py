"""Every metric equals an independent numpy computation (float64, whole tensors, no streaming)."""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest

from engine import compare
from engine.compare.layerwise import LAYER_COLUMNS
from engine.compare.metrics import SAMPLE_PER_BATCH, Accumulator, RelErrHistogram, sample_index
from engine.compare.reducers import CHUNK, HOST_KERNEL, HostReducer, balanced, host_stats

# every host test runs on the numpy path and on the compiled kernel (built by `pip install` wherever a C compiler is)
KERNELS = ["numpy", pytest.param("compiled", marks=pytest.mark.skipif(
    HOST_KERNEL != "compiled", reason="the compiled kernel was not built (no C compiler at install)"))]


@pytest.fixture(params=KERNELS)
def kernel(request):
    return request.param


class TensorAccumulator(Accumulator):
    """The host reducer feeding an accumulator, one batch pair at a time (what the layerwise loop does per tensor)."""

    kernel = HOST_KERNEL

    def update(self, ref: np.ndarray, cand: np.ndarray) -> None:
        stats, counts, sizes = HostReducer(self.kernel).reduce([(ref, cand)])
        self.add(stats[0], int(sizes[0]), counts[0])


def accumulator(kernel: str) -> TensorAccumulator:
    a = TensorAccumulator()
    a.kernel = kernel
    return a


def independent(batches_ref, batches_cand) -> dict[str, float]:
    cos = []
    for r, c in zip(batches_ref, batches_cand):
        r, c = r.astype(np.float64).ravel(), c.astype(np.float64).ravel()
        nr, nc = np.linalg.norm(r), np.linalg.norm(c)
        cos.append(1.0 if nr == 0 and nc == 0 else 0.0 if nr == 0 or nc == 0 else float(r @ c / (nr * nc)))
    r = np.concatenate([b.astype(np.float64).ravel() for b in batches_ref])
    c = np.concatenate([b.astype(np.float64).ravel() for b in batches_cand])
    d = c - r
    noise = float((d**2).sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(d == 0, 0.0, np.abs(d) / np.abs(r))
    return {
        "cosine": float(np.mean(cos)), "cosine_min": float(np.min(cos)),
        "snr_db": math.inf if noise == 0 else 10 * math.log10(float((r**2).sum()) / noise),
        "mse": float(np.mean(d**2)), "max_abs_err": float(np.abs(d).max()), "mean_abs_err": float(np.abs(d).mean()),
        "rel_err_median": float(np.sort(rel)[(len(rel) + 1) // 2 - 1 + (len(rel) % 2 == 0)]),  # upper median
    }


def check(got: dict, want: dict) -> None:
    for k in ("cosine", "cosine_min", "mse", "max_abs_err", "mean_abs_err"):
        assert got[k] == pytest.approx(want[k], rel=1e-5, abs=1e-7), k
    if math.isinf(want["snr_db"]):
        assert math.isinf(got["snr_db"])
    else:
        assert got["snr_db"] == pytest.approx(want["snr_db"], abs=1e-3)
    # histogram estimate: within its documented 2**(1/64) bound
    if want["rel_err_median"] == 0:
        assert got["rel_err_median"] == 0
    else:
        assert abs(math.log2(got["rel_err_median"] / want["rel_err_median"])) <= 1 / 64 + 1e-9


def test_accumulator_matches_numpy_on_random_batches(kernel):
    rng = np.random.default_rng(0)
    refs = [rng.standard_normal((3, 5, 7)).astype(np.float32) for _ in range(4)]
    cands = [r + rng.standard_normal(r.shape).astype(np.float32) * s for r, s in zip(refs, (0.01, 0.1, 0.3, 0.0))]
    acc = accumulator(kernel)
    for r, c in zip(refs, cands):
        acc.update(r, c)
    check(acc.result(), independent(refs, cands))


def test_zero_and_identical_conventions(kernel):
    z = np.zeros((2, 3), np.float32)
    one = np.ones((2, 3), np.float32)
    a = accumulator(kernel)
    a.update(z, z)  # both all-zero -> cosine 1
    a.update(one, one)
    s = a.result()
    assert s.cosine == 1.0 and s.snr_db == math.inf and s["mse"] == 0 and s["rel_err_median"] == 0
    b = accumulator(kernel)
    b.update(z, one)  # one all-zero -> cosine 0
    assert b.result().cosine == 0.0 and b.result().snr_db == -math.inf and b.result()["rel_err_median"] == math.inf


def test_huge_activations_do_not_overflow_float32_sums(kernel):
    r = np.full((2, 1000), 3e18, np.float32)  # sum of squares ~1.8e40 > float32 max
    c = r * np.float32(1.001)
    a = accumulator(kernel)
    a.update(r, c)
    s = a.result()
    assert s.snr_db == pytest.approx(60.0, abs=1e-3) and s.cosine == pytest.approx(1.0)


def test_subsampled_rel_err_median_is_close(kernel):
    rng = np.random.default_rng(3)
    r = rng.standard_normal((8, 64, 32, 32)).astype(np.float32)  # 524288 elements > SAMPLE_PER_BATCH
    c = r + 0.05 * rng.standard_normal(r.shape).astype(np.float32)
    a = accumulator(kernel)
    a.update(r, c)
    exact = float(np.median(np.abs(c - r) / np.abs(r)))
    assert a.result()["rel_err_median"] == pytest.approx(exact, rel=0.03)


@pytest.mark.parametrize("n", [1, 7, CHUNK - 1, CHUNK + 1, 3 * SAMPLE_PER_BATCH + 5, 11 * CHUNK + 3])
def test_histogram_counts_exactly_the_strided_sample(n, kernel):
    """The host gathers the histogram's sample chunk by chunk: the counts are those of every sample_stride-th element
    (the elements the device kernels read through sample_index), across chunk boundaries."""
    rng = np.random.default_rng(n)
    r = rng.standard_normal(n).astype(np.float32)
    c = r + 0.01 * rng.standard_normal(n).astype(np.float32)
    c[::5] = r[::5]  # exact zeros of |d|: the 0/0 -> 0 convention
    _, counts, size = host_stats(r, c, kernel=kernel)
    idx = sample_index(n, SAMPLE_PER_BATCH)
    want = RelErrHistogram.bins(np.abs(c[idx] - r[idx]), np.abs(r[idx]))
    assert size == n and counts.sum() == min(n, SAMPLE_PER_BATCH)
    np.testing.assert_array_equal(counts, want)


@pytest.mark.skipif(HOST_KERNEL != "compiled", reason="the compiled kernel was not built (no C compiler at install)")
@pytest.mark.parametrize("n", [0, 1, 2047, 2048, 2049, CHUNK + 1, 3 * SAMPLE_PER_BATCH + 5, 802816])
def test_compiled_kernel_equals_numpy_path(n):
    """Same histogram counts bit for bit (same float32 operations on the same elements), same sums within float32
    rounding, NaN and inf carried the same way."""
    rng = np.random.default_rng(n)
    r = (rng.standard_normal(n) * 3).astype(np.float32)
    c = r + 0.02 * rng.standard_normal(n).astype(np.float32)
    c[::7] = r[::7]
    r[::11] = 0.0  # x/0 -> inf bins
    got, want = host_stats(r, c, kernel="compiled"), host_stats(r, c, kernel="numpy")
    assert got[2] == want[2] == n
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_allclose(got[0], want[0], rtol=2e-6)
    if n:
        c[n // 2] = np.nan
        assert np.isnan(host_stats(r, c, kernel="compiled")[0]).tolist() == np.isnan(host_stats(r, c, kernel="numpy")[0]).tolist()
        c[n // 2] = np.inf
        np.testing.assert_array_equal(host_stats(r, c, kernel="compiled")[0][1:], host_stats(r, c, kernel="numpy")[0][1:])
        r[n // 2], c[n // 2] = -3e38, 3e38  # |d| overflows float32, not float64: both fall back and agree on the max
        got, want = host_stats(r, c, kernel="compiled")[0], host_stats(r, c, kernel="numpy")[0]
        assert got[5] == want[5] == pytest.approx(6e38, rel=1e-6)


def test_a_reference_holding_inf_counts_as_nan_in_the_top_bins(kernel):
    """inf/inf gives a NaN with the sign bit set on x86: numpy's bincount refused its negative bit pattern (the compare
    stopped), and the compiled kernel's compiler had dropped the fabsf meant to clear it."""
    r = np.array([np.inf, 1, 2, -np.inf, 0, 0] * 3, np.float32)
    c = np.array([1, np.inf, 2, np.inf, 0, 1] * 3, np.float32)
    _, counts, _ = host_stats(r, c, kernel=kernel)
    nan_bin = int(np.array([np.nan], np.float32).view(np.int32)[0]) >> 18
    assert {int(k): int(v) for k, v in zip(np.flatnonzero(counts), counts[counts > 0])} == {0: 6, 8160: 6, nan_bin: 6}
    acc = accumulator(kernel)
    acc.update(r, c)
    assert acc.result()["rel_err_median"] == math.inf  # the upper median falls in the inf bin


def test_compiled_kernel_is_built_where_a_compiler_is():
    """setup.py builds it optionally: where the installing machine had a C compiler (CI has), a silent build failure
    would leave every compare on the slower numpy path."""
    import shutil
    import sysconfig
    from pathlib import Path

    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler on this machine: the numpy path is the documented fallback")
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file():
        pytest.skip("no Python headers for this interpreter (Debian: python3-dev): the numpy path is the documented fallback")
    assert HOST_KERNEL == "compiled"


def test_threaded_reduction_equals_one_thread():
    rng = np.random.default_rng(5)
    pairs = [(rng.standard_normal(s).astype(np.float32), rng.standard_normal(s).astype(np.float32))
             for s in (300000, 5, 70000, 123457, 1, 65536)]
    one = HostReducer(HOST_KERNEL, threads=1).reduce(pairs)
    many = HostReducer(HOST_KERNEL, threads=3).reduce(pairs)
    for a, b in zip(one, many):
        np.testing.assert_array_equal(a, b)


def test_balanced_groups_split_work_evenly():
    groups = balanced([10, 1, 9, 2, 8, 3], 2)
    assert sorted(k for g in groups for k in g) == list(range(6))
    loads = [sum([10, 1, 9, 2, 8, 3][k] for k in g) for g in groups]
    assert loads == [16, 17] or loads == [17, 16]
    assert balanced([4], 8) == [[0]] and balanced([], 3) == []


def _marked_session(path, tensors):
    m = onnx.load(path)
    have = {o.name for o in m.graph.output}
    for t in tensors:
        if t not in have:
            m.graph.output.append(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"],
                                disabled_optimizers=["WeightBiasQuantization"])  # as QuantScope runs Q/DQ: float bias


def test_pipeline_layers_equal_independent_computation(tiny, tmp_path):
    # provider pinned: the independent computation below runs ONNX Runtime on the CPU
    result = compare(tiny / "tiny.onnx", tiny / "data.npz", out_dir=tmp_path / "run", batch_size=3, provider="cpu")
    layers = pd.read_csv(tmp_path / "run" / "layers.csv")
    assert tuple(layers.columns[: len(LAYER_COLUMNS)]) == LAYER_COLUMNS
    assert "Relu_0" in set(layers["node"])  # the unnamed node got a stable generated name
    tensors = list(layers["tensor"])
    ref = _marked_session(tmp_path / "run" / "reference.onnx", tensors)
    cand = _marked_session(tmp_path / "run" / "candidate.onnx", tensors)
    x = np.load(tiny / "data.npz")["x"]
    batches = [x[i : i + 3] for i in range(0, 10, 3)]
    per_tensor = {t: ([], []) for t in tensors}
    for b in batches:
        r = dict(zip([o.name for o in ref.get_outputs()], ref.run(None, {"x": b})))
        c = dict(zip([o.name for o in cand.get_outputs()], cand.run(None, {"x": b})))
        for t in tensors:
            per_tensor[t][0].append(r[t])
            per_tensor[t][1].append(c[t])
    snr = {}
    for row in layers.to_dict("records"):
        want = independent(*per_tensor[row["tensor"]])
        check(row, want)
        snr[row["tensor"]] = want["snr_db"]
    # introduced_db from its definition, with the graph read independently from reference.onnx
    graph = onnx.load(tmp_path / "run" / "reference.onnx").graph
    nsr = {t: 0.0 if math.isinf(s) else 10 ** (-s / 10) for t, s in snr.items()}
    for node in graph.node:
        for out in node.output:
            if out in nsr:
                worst_in = max((nsr.get(i, 0.0) for i in node.input), default=0.0)
                want = 10 * math.log10(max(nsr[out] - worst_in, 1e-12))
                got = layers.loc[layers["tensor"] == out, "introduced_db"].item()
                assert got == pytest.approx(want, abs=1e-3), out  # float32 sums vs float64
    assert result.summary.samples == 10 and result.summary.batches == 4
