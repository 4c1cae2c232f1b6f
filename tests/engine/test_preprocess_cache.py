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


def test_the_digest_of_an_unchanged_file_is_remembered_and_a_rewritten_file_is_digested_again(tmp_path, monkeypatch):
    import importlib

    from engine.model.loading import read_model

    pp = importlib.import_module("engine.quantize.preprocess")  # the module, not the function of the same name

    calls: list[str] = []
    real = pp.model_digest
    monkeypatch.setattr(pp, "model_digest", lambda m: calls.append("digest") or real(m))
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
    changed.doc_string = "retrained"
    onnx.save(changed, path)
    proto, files = read_model(path)
    third = pp.preprocess(proto, cache, files)
    assert len(calls) == 2 and not third.cached and third.digest == real(changed) != first.digest
