"""A sweep recorded in the run index: its row says which configuration was best, and it opens only as a sweep."""

from __future__ import annotations

import json
import math

import pytest

from engine.errors import ConfigError, RunFolderError
from engine.quantize.calibration import CalibrationSpec
from engine.quantize.config import CalibrationMethod, Precision
from engine.run_index import RunIndex, RunStatus
from engine.sweep import SweepConfig, SweepResult, SweepRow


def _result(folder, rows) -> SweepResult:
    result = SweepResult(folder, tuple(rows), "snr_db")
    (folder / "sweep.json").write_text(json.dumps(result.to_dict()))
    return result


def _row(method: str, snr: float, best: bool) -> SweepRow:
    cfg = SweepConfig(CalibrationSpec(CalibrationMethod.parse(method)), ("Conv",), Precision.INT8)
    return SweepRow("m.onnx", cfg, snr, 0.99, snr, None, None, 3, "conv1", 20.0, None, 1.0, "", best)


def test_a_finished_sweep_carries_its_best_configuration_and_opens_only_as_a_sweep(tmp_path):
    index = RunIndex(tmp_path / "root")
    ws, _ = index.new_workspace()
    folder = index.workspace_dir(ws) / "sweeps" / "sweep_a"
    folder.mkdir(parents=True)
    result = index.record_sweep(ws, "m.onnx", lambda out: _result(out, [_row("minmax", 30.0, False), _row("entropy", 34.5, True)]),
                                folder)
    (record,) = index.runs(ws)
    assert (record.kind, record.status, record.is_sweep) == ("sweep", RunStatus.DONE, True)
    assert record.snr_db == 34.5 and record.top_culprit == "conv1"
    assert record.message == f"best of 2 configurations: {result.rows[1].config.label}"
    assert record.load_sweep().rows == result.rows
    with pytest.raises(RunFolderError, match="is a sweep, not a comparison; open it on the Sweep page"):
        record.load()
    assert index.delete_folder(ws, record.id) == (record.id,) and not folder.exists()


def test_a_failed_sweep_is_recorded_failed_with_its_sentence_and_has_nothing_to_open(tmp_path):
    index = RunIndex(tmp_path / "root")
    ws, _ = index.new_workspace()

    def fails(out):
        raise ConfigError("Choose at least one calibration method to sweep.")

    with pytest.raises(ConfigError):
        index.record_sweep(ws, "m.onnx", fails, tmp_path / "s")
    (record,) = index.runs(ws)
    assert record.status is RunStatus.FAILED and record.message == "Choose at least one calibration method to sweep."
    with pytest.raises(RunFolderError, match="failed, so it has no results to open"):
        record.load_sweep()
    assert record.snr_db is None or math.isnan(record.snr_db)
