"""Probes and tasks on Ray: a local runtime on this machine's cores and GPUs, or an existing cluster.

A probe pool is a set of actors, each holding one session of the gated candidate: on the CPU one actor per core (one
thread each), on GPUs ACTORS_PER_GPU actors a GPU with the cores of its node. The probe, with its inputs and reference outputs, goes into Ray's object store once and
every actor reads it from there. Requests are handed out a run at a time (one probe, or a tile's worth where the probe
tiles them) as actors come free; results come back in request order.
ONNX Runtime computes the same on every worker (MLAS splits no reduction across threads; cuDNN algorithms are chosen
by heuristic within a fixed workspace, not by timing or free memory), so the results equal a serial run's."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import ray

from engine.diagnose.probe_scoring import ProbeMetrics
from engine.diagnose.probes import OnResult, OnStep, OutputProbe, ProbeRequest

__all__ = ["RayExecutor", "ACTORS_PER_GPU"]

# One actor a GPU: on the H100 host (16 cores), YOLOv8n's 129 sensitivity probes took 5.66 s with one actor, 5.35 s with
# two and 6.2 s with four sharing the card (serial: 3.15 s): processes sharing a GPU take turns on it.
ACTORS_PER_GPU = 1
STEP_S = 0.5  # while actors work, the pool calls on_step this often (a cancel's chance between results)


@ray.remote
class _ProbeWorker:
    def __init__(self, probe: OutputProbe, threads: int | None) -> None:
        if threads:
            probe.backend = probe.backend.with_threads(threads)
        self.probe = probe.__enter__()

    def run(self, requests: Sequence[ProbeRequest]) -> list[ProbeMetrics]:
        return self.probe.measure_many(requests)  # several to a run where the probe tiles them

    def run_size(self, samples: int | None) -> int:
        return self.probe.run_size(samples)  # with the session open: whether tiling held here


@ray.remote
def _task(fn: Callable, item, shared: dict):
    return fn(item, **shared)


def _gather(submit: Callable[[int], ray.ObjectRef], count: int, slots: int, on_result: OnResult | None) -> list:
    """Runs submit(i) for i < count with at most `slots` in flight; results in order of i."""
    results: list = [None] * count
    pending: dict[ray.ObjectRef, int] = {}
    nxt = done = 0
    try:
        while done < count:
            while nxt < count and len(pending) < slots:
                pending[submit(nxt)] = nxt
                nxt += 1
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                results[pending.pop(ref)] = ray.get(ref)
                done += 1
                if on_result is not None:
                    on_result(done, count)  # may raise Cancelled: the finally below drops what is still running
    finally:
        for ref in pending:
            ray.cancel(ref, force=False)
    return results


class _RayProbePool:
    def __init__(self, probe: OutputProbe, actors: list) -> None:
        self.probe, self.actors = probe, actors
        self.dispatched: list[int] = []  # the probes of each call handed to an actor by the last measure_many

    def measure_many(self, requests: Sequence[ProbeRequest], on_result: OnResult | None = None,
                     on_step: OnStep | None = None) -> list[ProbeMetrics]:
        """Requests go to free actors a run at a time: one probe, or a tile's worth on the same samples where the
        probe tiles them (run_size), padded to the same run size as a serial run, so results equal the serial run's."""
        sizes = {s: ray.get(self.actors[0].run_size.remote(s)) for s in {r.samples for r in requests}}
        chunks = self.probe.runs(requests, sizes)
        self.dispatched = [len(c) for c in chunks]
        free = list(self.actors)
        busy: dict[ray.ObjectRef, object] = {}
        results: list = [None] * len(requests)
        order: dict[ray.ObjectRef, list[int]] = {}
        nxt = done = 0
        try:
            while nxt < len(chunks) or busy:
                while nxt < len(chunks) and free:
                    actor = free.pop()
                    ref = actor.run.remote([requests[i] for i in chunks[nxt]])
                    busy[ref], order[ref] = actor, chunks[nxt]
                    nxt += 1
                ready, _ = ray.wait(list(busy), num_returns=1, timeout=None if on_step is None else STEP_S)
                if not ready and on_step is not None:
                    on_step()  # may raise Cancelled, as on_result may
                for ref in ready:
                    members = order.pop(ref)
                    for i, m in zip(members, ray.get(ref)):
                        results[i] = m
                    free.append(busy.pop(ref))
                    done += len(members)
                    if on_result is not None:
                        on_result(done, len(requests))  # may raise Cancelled: the finally below drops what is queued
        finally:
            for ref in busy:
                ray.cancel(ref, force=False)
        self.probe.probes += len(requests)
        return results


def _private_token() -> dict[str, str | None]:
    """A local runtime keeps Ray's token authentication, with a fresh token handed to its processes through the
    environment: otherwise Ray writes one to ~/.ray/auth_token, outside anything of ours. Nothing changes where the user
    set RAY_AUTH_MODE or a token. Returns the variables' previous values, for _restore_environment."""
    keys = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")
    if any(k in os.environ for k in (*keys, "RAY_AUTH_TOKEN_PATH")):
        return {}
    previous = {k: os.environ.get(k) for k in keys}
    os.environ.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)})
    _reload_auth()
    return previous


def _restore_environment(previous: dict[str, str | None]) -> None:
    """Puts back what _private_token changed, and has this process's Ray read it again (a later executor joining a
    cluster must not send our throwaway token)."""
    if not previous:
        return
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    _reload_auth()


def _reload_auth() -> None:
    """This process read its RayConfig and token at import: refresh both, as Ray does when it enables token mode."""
    try:
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
    except (ImportError, AttributeError):  # another Ray version: it reads the environment as it is
        pass


class RayExecutor:
    def __init__(self, address: str | None, num_cpus: int | None = None) -> None:
        """address: a cluster to join (None: start a local runtime on this machine, `num_cpus` of its cores)."""
        self._started = not ray.is_initialized()
        if self._started:
            kw = {"include_dashboard": False, "log_to_driver": False, "ignore_reinit_error": True}
            if address:
                ray.init(address=address, **kw)
            else:  # Ray's session files go to a private temporary folder, not /tmp/ray
                self._tmp = tempfile.mkdtemp(prefix="qs-ray-")
                self._env = _private_token()
                try:
                    ray.init(_temp_dir=self._tmp, num_cpus=num_cpus, **kw)
                except BaseException:
                    _restore_environment(self._env)
                    shutil.rmtree(self._tmp, ignore_errors=True)
                    raise
        res = ray.cluster_resources()
        self.cpus, self.gpus = int(res.get("CPU", os.cpu_count() or 1)), int(res.get("GPU", 0))
        # (CPUs, GPUs) of each live node: an actor must fit on one node, so GPU actors are planned from the GPU nodes
        self.nodes = [(int(n["Resources"].get("CPU", 0)), int(n["Resources"].get("GPU", 0)))
                      for n in ray.nodes() if n.get("Alive")] or [(self.cpus, self.gpus)]
        self.name = f"ray ({self.cpus} CPUs, {self.gpus} GPUs)"
        self.concurrent = True  # tasks share the machine: latencies are timed afterwards, one at a time

    def _plan(self, device: str) -> tuple[int, dict, int | None]:
        """(workers, actor options, threads per session). On GPUs: up to ACTORS_PER_GPU actors a GPU, each with an equal
        share of its node's cores, planned node by node (a node with cores and no GPU hosts none of them) and never more
        actors on a node than it has cores: an actor Ray cannot place would hold its share of the requests forever. On
        CPUs one actor a core."""
        gpu_nodes = [(c, g) for c, g in self.nodes if g > 0 and c > 0]
        if device == "cuda" and gpu_nodes:
            per_gpu = max(1, min(ACTORS_PER_GPU, *(c // g for c, g in gpu_nodes)))
            actors = [min(g * per_gpu, c) for c, g in gpu_nodes]
            cores = max(1, min(c // a for (c, _), a in zip(gpu_nodes, actors)))
            return sum(actors), {"num_gpus": 1 / per_gpu, "num_cpus": cores}, cores
        return max(1, self.cpus), {"num_cpus": 1}, 1

    @contextmanager
    def probe_pool(self, probe: OutputProbe) -> Iterator[_RayProbePool]:
        workers, options, threads = self._plan(probe.backend.capabilities.device)
        shared = ray.put(probe)
        actors = [_ProbeWorker.options(**options).remote(shared, threads) for _ in range(workers)]
        try:
            yield _RayProbePool(probe, actors)
        finally:
            for a in actors:
                ray.kill(a)

    def map_tasks(self, fn: Callable, items: Sequence, shared: dict, on_result: OnResult | None = None,
                  device: str = "cpu") -> list:
        """fn(item, **shared) for every item; `shared` goes into the object store once."""
        workers, options, _ = self._plan(device)
        if device == "cuda" and self.gpus:  # two tasks a GPU: one's host work (quantizing) overlaps the other's kernels
            workers, options = 2 * self.gpus, {"num_gpus": 0.5, "num_cpus": 1}
        ref = ray.put(shared)
        return _gather(lambda i: _task.options(**options).remote(fn, items[i], ref), len(items), workers, on_result)

    def close(self) -> None:
        if self._started:
            ray.shutdown()
            _restore_environment(getattr(self, "_env", {}))
            if getattr(self, "_tmp", None):
                shutil.rmtree(self._tmp, ignore_errors=True)
