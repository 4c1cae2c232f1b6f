"""Every hostile input gives its exact sentence through the engine API and the CLI, writes nothing outside the
run folder, and leaves an earlier result in that folder untouched."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

import engine
from engine.cli.main import main
from engine.run_index import RunIndex, RunStatus
from engine.settings import Settings
from tests.hostile.build_corpus import GOOD_MODEL, build

SAMPLES = GOOD_MODEL.parent


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    return root, build(root)


@pytest.fixture(scope="module")
def earlier_run(tmp_path_factory):
    """A finished run whose results must survive every failed comparison into its folder."""
    out = tmp_path_factory.mktemp("earlier") / "run"
    engine.compare(GOOD_MODEL, SAMPLES / "digits_calib.npz", out_dir=out, batch_size=64, provider="cpu")
    return out


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


def test_corpus_has_at_least_40_cases(corpus):
    assert len(corpus[1]) >= 40


def _args(root: Path, case: dict) -> dict:
    bad = root / case["file"]
    return {"model": bad if case["arg"] == "model" else GOOD_MODEL,
            "calib": bad if case["arg"] == "calib" else root / "good_calib.npz",
            "labels": bad if case["arg"] == "labels" else None}


def _check(message: str, case: dict) -> None:
    assert "\n" not in message and "Traceback" not in message
    if case["expect"] is not None:
        assert message == case["expect"], case["name"]
    else:
        assert message.startswith(case["expect_prefix"]), case["name"]


def _cases():
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return [pytest.param(i, id=c["name"]) for i, c in enumerate(build(Path(tmp)))]


@pytest.mark.parametrize("index", _cases())
def test_hostile_input(corpus, earlier_run, index, tmp_path, capsys):
    root, cases = corpus
    case = cases[index]
    args = _args(root, case)
    run = tmp_path / "run"
    shutil.copytree(earlier_run, run)
    before_run = _digest(run)
    before_corpus = _digest(root)

    with pytest.raises(engine.QuantScopeError) as err:
        engine.compare(args["model"], args["calib"], labels=args["labels"], out_dir=run, batch_size=4, provider="cpu",
                       **case.get("api_extra", {}))
    _check(str(err.value), case)

    argv = ["compare", str(args["model"]), "--calib", str(args["calib"]), "--out", str(run), "--batch", "4", "--provider", "cpu",
            "--quiet", *case.get("cli_extra", [])]
    if args["labels"] is not None:
        argv += ["--labels", str(args["labels"])]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and captured.err.endswith("\n") and captured.out == ""
    _check(captured.err[len("error: "):-1], case)

    after = _digest(run)
    for name in ("summary.json", "layers.csv", "candidate.onnx", "reference.onnx", "calibration_cache.json"):
        assert after[name] == before_run[name], f"{case['name']} changed the earlier {name}"
    assert _digest(root) == before_corpus, "nothing is written outside the run folder"
    (record,) = RunIndex(Settings.from_env().runs_root).runs()  # the CLI's attempt is in the run index, failed with the same sentence
    assert record.status is RunStatus.FAILED and record.run_dir == run.resolve()
    _check(record.message, case)
