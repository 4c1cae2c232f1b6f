"""Bounded-time fuzzing of the model and data loaders: whatever the bytes, only QuantScopeError escapes."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import QuantScopeError, load_data, load_model_bytes, model_info
from engine.model import load_model
from tests.hostile.build_corpus import GOOD_MODEL

MODEL_BYTES = GOOD_MODEL.read_bytes()
INFO = model_info(load_model(GOOD_MODEL))
FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _only_ours(fn) -> None:
    try:
        fn()
    except QuantScopeError as err:
        assert str(err) and "\n" not in str(err)


@FAST
@given(st.binary(max_size=4096))
def test_random_bytes_as_a_model(data):
    _only_ours(lambda: load_model_bytes(data, name="'fuzz.onnx'"))


@FAST
@given(st.lists(st.tuples(st.integers(0, len(MODEL_BYTES) - 1), st.integers(0, 255)), min_size=1, max_size=20))
def test_mutated_real_model(flips):
    data = bytearray(MODEL_BYTES)
    for pos, value in flips:
        data[pos] = value
    _only_ours(lambda: load_model_bytes(bytes(data), name="'mutated.onnx'"))


@FAST
@given(st.sampled_from([".npz", ".npy", ".json", ".zip", ".png"]), st.binary(max_size=4096))
def test_random_bytes_as_data(tmp_path_factory, suffix, data):
    folder = tmp_path_factory.mktemp("fuzz")
    if suffix == ".png":  # an image inside a folder
        (folder / "imgs").mkdir()
        (folder / "imgs" / "a.png").write_bytes(data)
        target = folder / "imgs"
    else:
        target = folder / f"d{suffix}"
        target.write_bytes(data)
    _only_ours(lambda: [b for b in load_data(target, INFO).batches(4)])


def _valid_npz() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, input=np.zeros((2, 1, 32, 32), np.float32))
    return buf.getvalue()


VALID_NPZ = _valid_npz()


@FAST
@given(st.lists(st.tuples(st.integers(0, len(VALID_NPZ) - 1), st.integers(0, 255)), min_size=1, max_size=10))
def test_mutated_npz(tmp_path_factory, flips):
    data = bytearray(VALID_NPZ)
    for pos, value in flips:
        data[pos] = value
    p = tmp_path_factory.mktemp("fuzz") / "d.npz"
    p.write_bytes(bytes(data))
    _only_ours(lambda: [b for b in load_data(p, INFO).batches(4)])


@FAST
@given(st.lists(st.tuples(st.text(min_size=1, max_size=30), st.binary(max_size=256)), min_size=1, max_size=5))
def test_zip_with_arbitrary_member_names(tmp_path_factory, members):
    p = tmp_path_factory.mktemp("fuzz") / "d.zip"
    with zipfile.ZipFile(p, "w") as zf:
        for name, data in members:
            try:
                zf.writestr(name, data)
            except (ValueError, UnicodeEncodeError, IndexError):
                pass  # names zipfile itself cannot write (e.g. "\x00" truncates to "") never reach QuantScope
    _only_ours(lambda: [b for b in load_data(p, INFO).batches(4)])
    # and nothing was extracted next to the archive
    assert sorted(x.name for x in Path(p).parent.iterdir()) == ["d.zip"]
