"""Probes on a local Ray cluster (2 CPUs) give exactly the serial results."""

from __future__ import annotations

import pandas as pd
import pytest

from engine import autofallback, sensitivity
from engine.scale import SerialExecutor, open_executor

ray = pytest.importorskip("ray", reason="Ray is the optional extra `scale` (pip install .[scale])")


@pytest.fixture(scope="module")
def cluster():
    from engine.scale.ray_executor import RayExecutor

    ex = RayExecutor(None, num_cpus=2)
    yield ex
    ex.close()


def _numbers(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=["probe_seconds"]).set_index("node")


def test_sensitivity_on_ray_equals_serial(run_copy, cluster):
    serial = sensitivity(run_copy, samples=64, pools=SerialExecutor().probe_pool)
    on_ray = sensitivity(run_copy, samples=64, pools=cluster.probe_pool)
    assert cluster.cpus == 2 and len(serial) == 10
    pd.testing.assert_frame_equal(_numbers(serial), _numbers(on_ray), check_exact=True)


def test_tiled_probes_go_to_ray_actors_a_run_at_a_time_and_equal_serial(run_copy, cluster):
    """Where the probe tiles probes (a device backend's default; forced here on the CPU), each actor gets a tile's worth
    of probes for one run, padded as the serial run pads them: the same results."""
    from contextlib import contextmanager

    sizes: list[int] = []
    pools_seen: list = []

    def tiled(pools):
        @contextmanager
        def factory(probe):
            probe.tile = True
            sizes.append(probe.run_size(None))
            with pools(probe) as pool:
                pools_seen.append(pool)
                yield pool
        return factory

    serial = sensitivity(run_copy, samples=16, pools=tiled(SerialExecutor().probe_pool))
    on_ray = sensitivity(run_copy, samples=16, pools=tiled(cluster.probe_pool))
    assert sizes == [4, 4]  # 16 samples a copy, 64 a run: four probes to a run
    dispatched = pools_seen[-1].dispatched
    assert max(dispatched) == 4 and min(dispatched) >= 1 and len(dispatched) == -(-sum(dispatched) // 4)
    pd.testing.assert_frame_equal(_numbers(serial), _numbers(on_ray), check_exact=True)
    untiled = sensitivity(run_copy, samples=16, pools=SerialExecutor().probe_pool)
    pd.testing.assert_frame_equal(_numbers(serial), _numbers(untiled), rtol=1e-6, atol=1e-5)  # same outputs, other sums


def test_autofallback_on_ray_equals_serial(run_copy, cluster, clean_run):
    target = f"snr_db={clean_run.final_output().snr_db - 1:.4f}"
    serial = autofallback(run_copy, target, apply=False, samples=64)
    on_ray = autofallback(run_copy, target, apply=False, samples=64, pools=cluster.probe_pool)
    assert on_ray.fallback == serial.fallback and on_ray.achieved == serial.achieved
    assert [(s.fallback, s.value) for s in on_ray.steps] == [(s.fallback, s.value) for s in serial.steps]


def test_without_ray_nothing_imports_it(run_copy):
    import subprocess
    import sys

    code = ("import sys\nfrom engine.cli.main import main\n"
            f"rc = main(['sensitivity', {str(run_copy)!r}, '--samples', '16', '--quiet'])\n"
            "print(rc, 'ray' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip().splitlines()[-1] == "0 False", out.stderr[-500:]
    assert isinstance(open_executor(None), SerialExecutor)


def test_sweep_on_ray_equals_serial(cluster, tmp_path):
    import numpy as np

    from engine.sweep import sweep
    from tests.engine.conftest import SAMPLES

    np.savez(tmp_path / "eval.npz", input=np.load(SAMPLES / "digits_eval.npz")["input"][:100])
    kw = {"data": tmp_path / "eval.npz", "methods": ("minmax", "entropy", "percentile"), "batch_size": 50, "provider": "cpu",
          "latency_runs": 2, "screen_samples": 8}
    serial = sweep([SAMPLES / "resnet_digits_outlier.onnx"], SAMPLES / "digits_calib.npz", out_dir=tmp_path / "a", **kw)
    on_ray = sweep([SAMPLES / "resnet_digits_outlier.onnx"], SAMPLES / "digits_calib.npz", out_dir=tmp_path / "b",
                   executor=cluster, **kw)
    assert on_ray.executor.startswith("ray") and len(on_ray.rows) == 3
    keep = ["config", "snr_db", "cosine", "first_output_snr_db", "culprit", "culprit_alone_snr_db", "best"]
    assert on_ray.to_frame()[keep].equals(serial.to_frame()[keep])
    assert on_ray.to_frame()["latency_ms"].notna().all()  # timed after the tasks, one at a time


def test_a_local_ray_runtime_writes_nothing_into_the_home_folder(tmp_path):
    """Ray 2.5x writes a token to ~/.ray/auth_token for a new local runtime; ours hands its processes a fresh token
    through the environment instead, and puts the environment back afterwards."""
    import os
    import subprocess
    import sys

    code = ("import os\nfrom engine.scale.ray_executor import RayExecutor\n"
            "ex = RayExecutor(None, num_cpus=1)\nassert os.environ['RAY_AUTH_MODE'] == 'token'\nex.close()\n"
            "print('RAY_AUTH_MODE' in os.environ, 'RAY_AUTH_TOKEN' in os.environ)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")} | {"HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert out.stdout.strip().splitlines()[-1] == "False False", out.stderr[-800:]
    assert not (tmp_path / ".ray").exists()


@pytest.mark.parametrize("nodes, per_gpu, workers, options", [
    ([(16, 1)], 1, 1, {"num_gpus": 1.0, "num_cpus": 16}),  # the H100 host: one actor with the cores
    ([(16, 1)], 4, 4, {"num_gpus": 0.25, "num_cpus": 4}),  # four sharing the GPU and the cores
    ([(2, 1)], 4, 2, {"num_gpus": 0.5, "num_cpus": 1}),  # a 2-CPU runtime on a GPU host (these tests there): two, both placed
    ([(1, 2)], 1, 1, {"num_gpus": 1.0, "num_cpus": 1}),  # fewer cores than GPUs: one actor a core, a GPU each
    ([(16, 0), (2, 1)], 4, 2, {"num_gpus": 0.5, "num_cpus": 1}),  # a cluster: only the GPU node's 2 cores count
    ([(16, 2), (8, 4)], 2, 12, {"num_gpus": 0.5, "num_cpus": 1}),  # unequal nodes: two a GPU, the smaller share of cores for all
    ([(8, 0)], 4, 8, {"num_cpus": 1}),  # no GPU: one actor a core
])
def test_every_probe_actor_fits_the_cluster(nodes, per_gpu, workers, options, monkeypatch):
    """On a GPU host a 2-CPU runtime planned four 1-CPU GPU actors: two could never be placed, and the requests handed to
    them waited forever (these tests hung on the H100). Actors must fit node by node, not in the cluster's totals."""
    from engine.scale import ray_executor
    from engine.scale.ray_executor import RayExecutor

    monkeypatch.setattr(ray_executor, "ACTORS_PER_GPU", per_gpu)
    ex = object.__new__(RayExecutor)  # the plan only reads the cluster's resources
    ex.nodes = nodes
    ex.cpus, ex.gpus = sum(c for c, _ in nodes), sum(g for _, g in nodes)
    got_workers, got_options, threads = ex._plan("cuda")
    assert (got_workers, got_options) == (workers, options)
    need_gpu = got_options.get("num_gpus", 0)
    fits = sum(min(c // got_options["num_cpus"], int(g / need_gpu) if need_gpu else c) for c, g in nodes
               if g >= need_gpu)
    assert fits >= got_workers and threads == got_options["num_cpus"]
