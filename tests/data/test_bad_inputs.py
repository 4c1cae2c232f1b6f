"""Every listed bad input gives one clear sentence (text asserted)."""

from __future__ import annotations

import pickle
import zipfile

import numpy as np
import pytest

from engine.data import load_data, load_labels
from engine.errors import DataError
from engine.model.info import ModelInfo, TensorSpec

INFO = ModelInfo((TensorSpec("input", ("batch", 1, 32, 32), "float32"),), (), 0, {}, 17, 10, "")
INFO2 = ModelInfo((TensorSpec("a", ("n", 4), "float32"), TensorSpec("b", ("n", 2), "float32")), (), 0, {}, 17, 10, "")
GOOD = np.zeros((4, 1, 32, 32), np.float32)


def _npz(tmp_path, **arrays):
    p = tmp_path / "d.npz"
    np.savez(p, **arrays)
    return p


def _err(fn) -> str:
    with pytest.raises(DataError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg and msg.endswith((".", ")")), msg
    return msg


def test_missing_input(tmp_path):
    p = _npz(tmp_path, a=np.zeros((3, 4), np.float32))
    assert _err(lambda: load_data(p, INFO2)) == (
        "'d.npz' has no array for model input 'b' (it has 'a'); name each array after a model input: 'a', 'b'."
    )


def test_extra_input(tmp_path):
    p = _npz(tmp_path, input=GOOD, junk=GOOD)
    assert "has array(s) 'junk' that are not model inputs" in _err(lambda: load_data(p, INFO))


def test_wrong_dtype(tmp_path):
    p = _npz(tmp_path, input=GOOD.astype(np.float64))
    assert _err(lambda: load_data(p, INFO)) == (
        "Input 'input' in 'd.npz' has dtype float64 but the model expects float32; convert it (e.g. array.astype(np.float32))."
    )


def test_wrong_rank(tmp_path):
    p = _npz(tmp_path, input=np.zeros((4, 32, 32), np.float32))
    assert "but the model expects rank 4 [batch, 1, 32, 32]" in _err(lambda: load_data(p, INFO))


def test_wrong_shape(tmp_path):
    p = _npz(tmp_path, input=np.zeros((4, 3, 32, 32), np.float32))
    assert _err(lambda: load_data(p, INFO)) == (
        "Input 'input' in 'd.npz' has size 3 on axis 1 but the model expects 1 (model shape [batch, 1, 32, 32], data sample shape [3, 32, 32])."
    )


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_inf(tmp_path, bad):
    arr = GOOD.copy()
    arr[1, 0, 3, 3] = bad
    p = _npz(tmp_path, input=arr)
    assert _err(lambda: load_data(p, INFO)) == (
        "Input 'input' in 'd.npz' contains 1 NaN or Inf value(s); clean the data before calibrating."
    )


def test_zero_samples(tmp_path):
    p = _npz(tmp_path, input=np.zeros((0, 1, 32, 32), np.float32))
    assert _err(lambda: load_data(p, INFO)) == "'d.npz' contains zero samples; provide at least one sample per input."


def test_pickled_npy_is_never_loaded(tmp_path):
    p = tmp_path / "evil.npy"
    np.save(p, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    assert "contains pickled Python objects, which QuantScope never loads" in _err(lambda: load_data(p, INFO))


def test_pickle_file_named_npz(tmp_path):
    p = tmp_path / "evil.npz"
    p.write_bytes(pickle.dumps({"input": GOOD}))
    assert _err(lambda: load_data(p, INFO)) == (
        "'evil.npz' contains pickled Python objects, which QuantScope never loads because unpickling can run code; "
        "save plain numeric arrays (np.save / np.savez with numeric dtypes)."
    )


def test_labels_length_mismatch(tmp_path):
    p = tmp_path / "l.npy"
    np.save(p, np.zeros(5, np.int64))
    assert _err(lambda: load_labels(p, 4)) == "'l.npy' has 5 labels but the data has 4 samples; give exactly one label per sample."
    assert _err(lambda: load_labels(p, 4, what="'labels_79.npy'")).startswith("'labels_79.npy' has 5 labels")  # the user's name


def test_labels_float(tmp_path):
    p = tmp_path / "l.npy"
    np.save(p, np.zeros(4, np.float32))
    assert "labels must be integer class indices" in _err(lambda: load_labels(p, 4))


def test_zip_slip_is_refused(tmp_path):
    p = tmp_path / "evil.zip"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("../../etc/passwd.png", b"x")
    assert "whose path leaves the archive" in _err(lambda: load_data(p, INFO))


def test_absolute_zip_member_is_refused(tmp_path):
    p = tmp_path / "evil.zip"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("/abs/a.png", b"x")
    assert "whose path leaves the archive" in _err(lambda: load_data(p, INFO))


def test_npy_for_multi_input_model(tmp_path):
    p = tmp_path / "d.npy"
    np.save(p, np.zeros((2, 4), np.float32))
    assert "is a single .npy array but the model has 2 inputs" in _err(lambda: load_data(p, INFO2))


def test_polygraphy_json_wrong_names(tmp_path):
    import base64
    import io
    import json

    buf = io.BytesIO()
    np.save(buf, GOOD)
    p = tmp_path / "in.json"
    p.write_text(json.dumps([{"x": {"array": base64.b64encode(buf.getvalue()).decode(), "polygraphy_class": "ndarray"}}]))
    assert "has no array for model input 'input' (it has 'x')" in _err(lambda: load_data(p, INFO))


def test_polygraphy_json_malformed(tmp_path):
    p = tmp_path / "in.json"
    p.write_text("{not json")
    assert _err(lambda: load_data(p, INFO)) == (
        "'in.json' is not valid JSON (JSONDecodeError); pass the file written by `polygraphy run --save-inputs`."
    )


def test_unknown_format(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("1,2")
    assert "has an unsupported format" in _err(lambda: load_data(p, INFO))


def test_the_model_reason_comes_before_what_the_data_file_holds(tmp_path):
    """silero-vad's sample rate is a scalar input: an .npz holding it as a scalar was refused for its array ("needs a
    sample axis"), which sent the user to reshape data for a model that cannot be batched at all."""
    info = ModelInfo((TensorSpec("input", ("batch", 512), "float32"), TensorSpec("sr", (), "int64")), (), 0, {}, 17, 10, "")
    p = _npz(tmp_path, input=np.zeros((4, 512), np.float32), sr=np.array(16000, np.int64))
    assert _err(lambda: load_data(p, info)) == (
        "Model input 'sr' is a scalar, so it cannot take one value per sample: QuantScope batches every input on axis 0; "
        "export the model with 'sr' as a constant or with a batch axis first.")


def test_an_rnn_state_with_a_fixed_1_first_is_not_refused(tmp_path):
    """A PyTorch RNN export's h0 is [1, batch, H]: its fixed 1 fixes the batch at 1, and samples go one a batch as they
    are, as before the batch-axis check (only silero's [2, batch, 128] cannot take samples on axis 0)."""
    info = ModelInfo((TensorSpec("x", ("batch", 8), "float32"), TensorSpec("h0", (1, "batch", 8), "float32")), (), 0, {}, 17, 10, "")
    p = _npz(tmp_path, x=np.zeros((4, 8), np.float32), h0=np.zeros((4, 1, 8), np.float32))
    assert load_data(p, info).num_samples == 4
    silero = ModelInfo((TensorSpec("x", ("batch", 8), "float32"), TensorSpec("state", (2, "batch", 8), "float32")), (), 0, {}, 17, 10, "")
    assert _err(lambda: load_data(p, silero)).startswith("Model input 'state' has its batch axis 'batch' at position 1")
