"""Pre-processing is cached by the model's content: a second comparison of the same model takes the prepared graph from
the cache, and links (or copies) the cache's file as its reference instead of serializing it again."""

from __future__ import annotations

import hashlib

import onnx

from engine import compare
from engine.pipeline import PREPROCESS_CACHE
from engine.progress import Stage
from engine.runs import RunFolder
from engine.settings import Settings
from tests.engine.conftest import SAMPLES

MODEL, CALIB = SAMPLES / "resnet_digits_outlier.onnx", SAMPLES / "digits_calib.npz"


def test_a_second_compare_takes_the_prepared_model_from_the_cache_and_links_its_file(tmp_path):
    settings = Settings.from_env({"QUANTSCOPE_RUNS_ROOT": str(tmp_path / "root")})
    said: list[str] = []

    def progress(e):
        if e.stage is Stage.PREPROCESS and e.done == 1:
            said.append(e.message)

    for name in ("a", "b"):
        compare(MODEL, CALIB, out_dir=tmp_path / name, provider="cpu", screen_samples=0, settings=settings, progress=progress)
    assert said == ["pre-processed", "pre-processed (cached)"]
    digest = hashlib.sha256(onnx.load(MODEL).SerializeToString(deterministic=True)).hexdigest()
    (entry,) = (tmp_path / "root" / PREPROCESS_CACHE).glob(f"*-{digest}.onnx")  # keyed by the user's model
    first, second = (RunFolder(tmp_path / n) for n in ("a", "b"))
    assert second.reference.read_bytes() == first.reference.read_bytes() == entry.read_bytes()
    assert first.reference.samefile(entry) and second.reference.samefile(entry)  # hard links: nothing serialized again
    assert first.read_config().model_sha256 == second.read_config().model_sha256 == digest


def _counting_digests(monkeypatch):
    import importlib

    pp = importlib.import_module("engine.quantize.preprocess")  # the module, not the function of the same name
    calls: list[str] = []
    real = pp.model_digest
    monkeypatch.setattr(pp, "model_digest", lambda m: calls.append("digest") or real(m))
    return pp, calls, real


def test_the_digest_of_an_unchanged_file_is_remembered_and_a_rewritten_file_is_digested_again(tmp_path, monkeypatch):
    from engine.model import loading
    from engine.model.loading import read_model

    monkeypatch.setattr(loading, "RACY_SECONDS", 0.0)  # files written just now count as settled (see the next test)
    pp, calls, real = _counting_digests(monkeypatch)
    path, cache = tmp_path / "model.onnx", tmp_path / "cache"
    path.write_bytes(MODEL.read_bytes())
    proto, files = read_model(path)
    first = pp.preprocess(proto, cache, files)
    again, again_files = read_model(path)
    assert again_files == files  # the same file, unchanged: the same identity
    second = pp.preprocess(again, cache, again_files)
    assert len(calls) == 1 and (first.cached, second.cached) == (False, True)  # the second read of the file: no digest
    assert first.digest == second.digest == real(onnx.load(MODEL))
    changed = onnx.load(MODEL)
    changed.graph.node[0].name = changed.graph.node[0].name[:-1] + "X"  # a retrained file: same size, other bytes
    onnx.save(changed, path)
    assert path.stat().st_size == len(MODEL.read_bytes())
    proto, files = read_model(path)
    third = pp.preprocess(proto, cache, files)
    assert len(calls) == 2 and not third.cached and third.digest == real(changed) != first.digest


def test_a_file_changed_within_the_clock_tick_is_digested_every_time(tmp_path, monkeypatch):
    from engine.model.loading import read_model

    pp, calls, _ = _counting_digests(monkeypatch)
    path, cache = tmp_path / "model.onnx", tmp_path / "cache"
    path.write_bytes(MODEL.read_bytes())  # just written: a same-size rewrite in the same tick would keep its times
    proto, files = read_model(path)
    assert files == ""
    pp.preprocess(proto, cache, files)
    pp.preprocess(*read_model(path)[:1], cache, read_model(path)[1])
    assert len(calls) == 2 and not (cache / "by-file").exists()
