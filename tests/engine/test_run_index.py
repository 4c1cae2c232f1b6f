"""The run index: past runs are listed after a restart, a run killed with SIGKILL is shown as incomplete on the
next start and leaves earlier runs intact, and a workspace opens only with its own token."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import engine
from engine.run_index import CLI_WORKSPACE, RunIndex, RunStatus
from engine.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_models"
MODEL, CALIB = SAMPLES / "resnet_digits_outlier.onnx", SAMPLES / "digits_calib.npz"


def _cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "engine.cli.main", *args], cwd=ROOT, env=os.environ.copy(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}


def _kill_when(proc: subprocess.Popen, ready, what: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, f"the process ended before {what}: {proc.communicate()[1][-500:]}"
        assert time.time() < deadline, f"never reached {what}"
        time.sleep(0.005)
    assert proc.poll() is None, f"the process finished before it could be killed {what}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def _statuses() -> dict[tuple[str, str], RunStatus]:
    return {(r.kind, r.run_dir.name): r.status for r in RunIndex(Settings.from_env().runs_root).runs()}


def test_sigkill_mid_run_is_incomplete_on_next_start_and_earlier_runs_are_intact(tmp_path):
    earlier, killed = tmp_path / "earlier", tmp_path / "killed"
    done = _cli("compare", str(MODEL), "--calib", str(CALIB), "--out", str(earlier), "--batch", "1", "--provider", "cpu", "--quiet")
    assert done.wait() == 0, done.communicate()[1]
    snapshot = _digest(earlier)

    # 1. killed mid-comparison (calibrated, comparing batch by batch) in a new folder
    proc = _cli("compare", str(MODEL), "--calib", str(CALIB), "--out", str(killed), "--batch", "1", "--provider", "cpu", "--quiet")
    _kill_when(proc, lambda: (killed / "calibration_cache.json").is_file(), "mid-comparison")
    # 2. killed mid-rebuild of the earlier run, as soon as the index shows it running (it replaces the results only at
    # its end; a rebuild of the sample takes well under a second, so waiting longer would race its end)
    proc = _cli("rebuild", str(earlier), "--fallback", "block3_2_conv", "--provider", "cpu", "--quiet")

    def rebuilding() -> bool:
        return any(r.kind == "rebuild" and r.status is RunStatus.RUNNING for r in RunIndex(Settings.from_env().runs_root).runs())

    _kill_when(proc, rebuilding, "mid-rebuild")

    index = RunIndex(Settings.from_env().runs_root)  # the next start; the rebuild process, opening the index, had already marked the first one
    assert index.recovered == 1
    assert _statuses() == {("compare", "earlier"): RunStatus.DONE, ("compare", "killed"): RunStatus.INCOMPLETE,
                           ("rebuild", "earlier"): RunStatus.INCOMPLETE}
    assert RunIndex(Settings.from_env().runs_root).recovered == 0  # recovery happens once

    # the earlier run is intact: same files, and the index still finds its results
    assert _digest(earlier) == snapshot
    first = next(r for r in index.runs() if r.kind == "compare" and r.run_dir.name == "earlier")
    results = ("candidate.onnx", "layers.csv", "summary.json")
    assert {k: v for k, v in _digest(first.result_dir()).items() if k in results} == {k: v for k, v in snapshot.items() if k in results}
    assert engine.load_result(earlier).summary.fallback == ()
    with pytest.raises(engine.RunFolderError):  # the killed run has no results, and says so in a sentence
        engine.load_result(killed)

    # `quantscope runs` (a new process) shows both incomplete runs and the finished one
    out = subprocess.run([sys.executable, "-m", "engine.cli.main", "runs", "--json"], cwd=ROOT, capture_output=True, text=True, check=True)
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(r["kind"], Path(r["folder"]).name, r["status"]) for r in rows] == [
        ("compare", "earlier", "done"), ("compare", "killed", "incomplete"), ("rebuild", "earlier", "incomplete")]
    assert rows[0]["snr_db"] == pytest.approx(engine.load_result(earlier).final_output().snr_db)
    assert rows[1]["message"].startswith("Its process stopped before the run finished")

    # both folders work again: the rebuild is repeated, the killed comparison is run again in its folder
    again = _cli("rebuild", str(earlier), "--fallback", "block3_2_conv", "--provider", "cpu", "--quiet")
    assert again.wait() == 0, again.communicate()[1]
    redo = _cli("compare", str(MODEL), "--calib", str(CALIB), "--out", str(killed), "--batch", "16", "--provider", "cpu", "--quiet")
    assert redo.wait() == 0, redo.communicate()[1]
    records = RunIndex(Settings.from_env().runs_root).runs()
    assert [r.status for r in records][-2:] == [RunStatus.DONE, RunStatus.DONE]
    # each finished row still points at its own results: the first compare's are now history/<seq>
    assert records[0].result_dir() == earlier / "history" / str(records[0].seq)
    assert json.loads((records[0].result_dir() / "summary.json").read_text())["fallback"] == []
    assert engine.load_result(records[3].result_dir()).summary.fallback == ("block3_2_conv",)


def test_cli_runs_are_listed_with_their_numbers_and_failures(tmp_path, capsys):
    from engine.cli.main import main

    assert main(["runs"]) == 0
    assert capsys.readouterr().out == "no runs recorded yet\n"
    out = tmp_path / "run"
    assert main(["compare", str(MODEL), "--calib", str(CALIB), "--out", str(out), "--batch", "32", "--provider", "cpu", "--quiet"]) == 0
    assert main(["rebuild", str(out), "--fallback", "no_such_node", "--provider", "cpu", "--quiet"]) == 2
    assert main(["compare", str(MODEL), "--calib", str(CALIB), "--out", str(tmp_path / "x"), "--quiet", "--no-index"]) == 0
    err = capsys.readouterr().err.strip().removeprefix("error: --fallback: ")  # the CLI names the flag
    first, failed = RunIndex(Settings.from_env().runs_root).runs()  # --no-index left no row
    result = engine.load_result(out)
    assert (first.status, first.workspace, first.model, first.seq) == (RunStatus.DONE, CLI_WORKSPACE, MODEL.name, 1)
    assert first.snr_db == pytest.approx(result.final_output().snr_db) and first.top_culprit == result.summary.culprits[0].node
    assert (failed.status, failed.kind, failed.message) == (RunStatus.FAILED, "rebuild", err)
    assert main(["runs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and " done " in lines[1] and " failed " in lines[2] and err in lines[2]


def test_an_unwritable_index_warns_and_the_run_still_happens(tmp_path, monkeypatch, capsys):
    from engine.cli.main import main

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("QUANTSCOPE_RUNS_ROOT", str(blocker / "runs"))
    assert main(["compare", str(MODEL), "--calib", str(CALIB), "--out", str(tmp_path / "r"), "--batch", "32", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert err.startswith(f"warning: Cannot create the run index in {blocker / 'runs'}") and "not recorded in the index" in err


def test_a_corrupt_index_is_one_sentence(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    root.mkdir()
    (root / "index.sqlite3").write_bytes(b"this is not a database" * 100)
    with pytest.raises(engine.RunFolderError, match=r"^The run index .* is unreadable \(.*\); move it aside"):
        RunIndex(root)


def test_a_workspace_opens_only_with_its_token_and_sees_only_its_runs(tmp_path):
    index = RunIndex(tmp_path)
    ws_a, token_a = index.new_workspace()
    ws_b, token_b = index.new_workspace()
    assert index.open_workspace(token_a) == ws_a and index.open_workspace(token_b) == ws_b
    for crafted in (ws_a, ws_a.upper(), token_a[:-1], "", "../" + ws_a, "x" * 1000, "' OR 1=1 --"):
        assert index.open_workspace(crafted) is None
    run_a, folder_a = index.start(ws_a, "compare", "m.onnx")
    assert folder_a == tmp_path / ws_a / f"run_{run_a:04d}"
    assert [r.id for r in index.runs(ws_b)] == []
    with pytest.raises(engine.RunFolderError) as other:
        index.get(ws_b, run_a)
    with pytest.raises(engine.RunFolderError) as unknown:
        index.get(ws_b, 999)
    assert str(other.value) == f"There is no run {run_a} in this workspace; pick a run from the History page."
    assert str(unknown.value) == "There is no run 999 in this workspace; pick a run from the History page."
    for crafted in ("../" + ws_a, f"{run_a} OR 1=1", "1e3", "-1"):
        with pytest.raises(engine.RunFolderError, match="is not a run number"):
            index.get(ws_b, crafted)
    assert index.get(ws_a, str(run_a)).workspace == ws_a
    raw = (tmp_path / "index.sqlite3").read_bytes()
    assert token_a.encode() not in raw and token_b.encode() not in raw  # only hashes are stored


def test_eight_processes_writing_at_once_lose_nothing(tmp_path):
    code = ("import sys; from engine.run_index import RunIndex, RunStatus\n"
            "ix = RunIndex(sys.argv[1]); ws, _ = ix.new_workspace()\n"
            "for i in range(25):\n"
            "    run_id, _ = ix.start(ws, 'compare', f'm{i}')\n"
            "    ix.fail(run_id, f'{ws} {i}') if i % 2 else ix.fail(run_id, 'stopped', RunStatus.INCOMPLETE)\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, stderr=subprocess.PIPE, text=True) for _ in range(8)]
    assert all(p.wait(timeout=120) == 0 for p in procs), [p.stderr.read()[-300:] for p in procs]
    index = RunIndex(tmp_path)
    rows = index.runs()
    assert len(rows) == 200 and len({r.id for r in rows}) == 200 and len({r.workspace for r in rows}) == 8
    for ws in {r.workspace for r in rows}:
        mine = index.runs(ws)
        assert [r.model for r in mine] == [f"m{i}" for i in range(25)]
        assert [r.message for r in mine if r.status is RunStatus.FAILED] == [f"{ws} {i}" for i in range(1, 25, 2)]
    assert not any(r.status is RunStatus.RUNNING for r in rows)


def test_deleting_a_run_folder_takes_only_that_folder_and_only_for_its_workspace(tmp_path):
    index = RunIndex(tmp_path)
    ws_a, _ = index.new_workspace()
    ws_b, _ = index.new_workspace()
    first, folder1 = index.start(ws_a, "compare", "m.onnx")
    rebuild_of_first, _ = index.start(ws_a, "rebuild", "m.onnx", folder1)
    second, folder2 = index.start(ws_a, "compare", "m.onnx")
    for folder in (folder1, folder2):
        (folder / "cache").mkdir(parents=True)
        (folder / "cache" / "batch_0.npy").write_bytes(b"x" * 1000)
    with pytest.raises(engine.RunFolderError, match=f"^There is no run {first} in this workspace"):
        index.delete_folder(ws_b, first)  # another workspace's run: as if it did not exist
    with pytest.raises(engine.RunFolderError, match="is still running; wait for it to finish"):
        index.delete_folder(ws_a, first)
    assert folder1.is_dir()
    index.fail(first, "x")
    index.fail(rebuild_of_first, "y")
    assert index.delete_folder(ws_a, first) == (first, rebuild_of_first)
    assert not folder1.exists() and not list(tmp_path.glob(f"{ws_a}/.deleting-*"))
    assert [r.id for r in index.runs(ws_a)] == [second] and (folder2 / "cache" / "batch_0.npy").is_file()
    cli_run, _ = index.start(CLI_WORKSPACE, "compare", "m.onnx", tmp_path / "elsewhere")
    with pytest.raises(engine.RunFolderError, match="'cli' is not a dashboard workspace"):
        index.delete_folder(CLI_WORKSPACE, cli_run)  # the CLI's folders are the user's: never deleted by QuantScope


def test_an_index_deleted_under_a_running_server_is_one_sentence(tmp_path):
    index = RunIndex(tmp_path)
    ws, _ = index.new_workspace()
    for f in tmp_path.glob("index.sqlite3*"):
        f.unlink()
    with pytest.raises(engine.RunFolderError, match=r"^The run index .* cannot be used \(no such table: runs\); restart QuantScope"):
        index.runs(ws)


def test_a_second_writer_on_the_same_run_folder_is_refused_in_one_sentence(tmp_path):
    out = tmp_path / "run"
    engine.compare(MODEL, CALIB, out_dir=out, batch_size=64, provider="cpu")
    before = _digest(out)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from engine.runs import RunFolder\n"
                               "with RunFolder(sys.argv[1]).lock():\n    print('held', flush=True); time.sleep(60)", str(out)],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"  # another process is writing the folder
        sentence = (f"Another comparison or rebuild is writing {out} right now; wait for it to finish, then run this again.")
        with pytest.raises(engine.RunFolderError) as err:
            engine.rebuild(out, fallback=["block3_2_conv"])
        assert str(err.value) == sentence
        with pytest.raises(engine.RunFolderError) as err:
            engine.compare(MODEL, CALIB, out_dir=out, batch_size=64, provider="cpu")
        assert str(err.value) == sentence
        assert _digest(out) == before and not (out / "history").exists()
    finally:
        holder.kill()
        holder.wait()
    assert engine.rebuild(out, fallback=["block3_2_conv"]).summary.fallback == ("block3_2_conv",)  # the OS dropped the lock


def test_a_cancelled_run_is_recorded_as_cancelled_not_failed(tmp_path):
    index = RunIndex(tmp_path / "root")

    def cancelled_compare(folder):
        def progress(ev):
            if ev.stage == engine.Stage.COMPARE:
                raise engine.Cancelled()
        return engine.compare(MODEL, CALIB, out_dir=folder, batch_size=50, provider="cpu", progress=progress)

    with pytest.raises(engine.Cancelled):
        index.record("ws", "compare", MODEL.name, cancelled_compare)
    (run,) = index.runs("ws")
    assert (run.status, run.message) == (RunStatus.CANCELLED, "Cancelled; the earlier results are untouched.")
    with pytest.raises(engine.RunFolderError, match="was cancelled, so it has no results to open"):
        run.load()


def test_a_model_with_several_outputs_is_indexed_by_every_output_together(tmp_path):
    """History showed a layout detector's first output (1.47 dB) as the model's SNR where Compare's first tile, the
    headline and the ranking give every float output together (2.41 dB)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    from tests.engine.conftest import tiny_model

    m = tiny_model()
    m.graph.output.append(helper.make_tensor_value_info("f", TensorProto.FLOAT, ["n", 4]))
    onnx.save(m, tmp_path / "two.onnx")
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(2).standard_normal((10, 2, 8, 8)).astype(np.float32))
    from engine.cli.main import main

    assert main(["compare", str(tmp_path / "two.onnx"), "--calib", str(tmp_path / "d.npz"), "--out", str(tmp_path / "run"),
                 "--batch", "5", "--provider", "cpu", "--screen-samples", "0", "--quiet"]) == 0
    (row,) = RunIndex(Settings.from_env().runs_root).runs()
    s = engine.load_result(tmp_path / "run").summary
    assert s.outputs["y"].snr_db != pytest.approx(s.outputs["f"].snr_db)  # the two figures differ
    assert row.snr_db == pytest.approx(s.outputs_together_snr_db()) and row.snr_db != pytest.approx(s.outputs["y"].snr_db)
