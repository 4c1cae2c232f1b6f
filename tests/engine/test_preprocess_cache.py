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
