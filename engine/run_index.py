"""The run index: one SQLite file under the runs root that lists every run, so the dashboard's History page and
`quantscope runs` find past runs after a restart.

    ROOT/index.sqlite3   workspaces (id, sha256 of the access token) and runs (one row per compare, rebuild or sweep)
    ROOT/<workspace>/run_<id>/   the run folders (see runs.py); a sweep's row names its sweep folder

A run is inserted as `running` with its process's identity before any work starts, and becomes `done` or
`failed` when it ends. A process killed with SIGKILL never gets there: whoever opens the index next sees that
the process is gone and marks the row `incomplete`. Rows are only ever read through their workspace: a
workspace is named by a random id (its folder) but opened only with a separate random token, of which the
index keeps a hash, so knowing a folder name or a run number never opens somebody else's run."""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
import shutil
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from engine.errors import Cancelled, QuantScopeError, RunFolderError, unexpected_error_sentence
from engine.results import ComparisonResult
from engine.runs import RunFolder

if TYPE_CHECKING:
    from engine.sweep import SweepResult

__all__ = ["RunIndex", "RunRecord", "RunStatus", "CLI_WORKSPACE", "INDEX_FILE", "SWEEP_KIND"]

INDEX_FILE = "index.sqlite3"
CLI_WORKSPACE = "cli"  # runs started by `quantscope compare/rebuild` (their folders live wherever --out says)
SWEEP_KIND = "sweep"  # a row whose folder holds a sweep (sweep.json), not a comparison
SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS workspaces (
    id TEXT PRIMARY KEY,
    token_sha256 TEXT UNIQUE,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace TEXT NOT NULL,
    kind TEXT NOT NULL,
    model TEXT NOT NULL,
    run_dir TEXT NOT NULL,
    status TEXT NOT NULL,
    started REAL NOT NULL,
    finished REAL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    process TEXT,
    seq INTEGER,
    snr_db REAL,
    cosine REAL,
    top1_agreement REAL,
    top_culprit TEXT,
    fallback TEXT NOT NULL DEFAULT '',
    message TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS runs_by_workspace ON runs (workspace, id);
"""


class RunStatus(str, Enum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    INCOMPLETE = "incomplete"  # its process died (SIGKILL, power loss) before it could say done or failed
    CANCELLED = "cancelled"  # the user cancelled it; earlier results are untouched


@dataclass(frozen=True)
class RunRecord:
    id: int
    workspace: str
    kind: str
    model: str
    run_dir: Path
    status: RunStatus
    started: float
    finished: float | None
    seq: int | None  # which version of the run folder's results this run wrote (history/<seq> once superseded)
    snr_db: float | None
    cosine: float | None
    top1_agreement: float | None
    top_culprit: str | None
    fallback: tuple[str, ...]
    message: str  # the error sentence of a failed run, the reason of an incomplete one

    def result_dir(self) -> Path | None:
        """Where this run's results are now: history/<seq> once a later run in the folder archived them."""
        if self.status is not RunStatus.DONE or self.seq is None:
            return None
        archived = self.run_dir / "history" / str(self.seq)
        if archived.is_dir():
            return archived
        return self.run_dir if RunFolder(self.run_dir).has_results() else None

    @property
    def is_sweep(self) -> bool:
        return self.kind == SWEEP_KIND

    def _not_finished(self) -> RunFolderError:
        why = {RunStatus.RUNNING: "is still running", RunStatus.FAILED: "failed", RunStatus.INCOMPLETE: "did not finish",
               RunStatus.CANCELLED: "was cancelled", RunStatus.DONE: "is finished"}
        if self.status is RunStatus.DONE:
            return RunFolderError(f"Run {self.id}'s files are gone from {self.run_dir}; pick another run.")
        return RunFolderError(f"Run {self.id} {why[self.status]}, so it has no results to open; pick a finished run.")

    def load(self) -> ComparisonResult:
        """This run's results, wherever they are now; `run_dir` stays the run folder so a rebuild can start from it."""
        if self.is_sweep:
            raise RunFolderError(f"Run {self.id} is a sweep, not a comparison; open it on the Sweep page.")
        files = self.result_dir()
        if files is None:
            raise self._not_finished()
        from engine.pipeline import load_result

        loaded = load_result(files)
        return ComparisonResult(self.run_dir, loaded.layers, loaded.summary, files_dir=None if files == self.run_dir else files)

    def load_sweep(self) -> SweepResult:
        """A finished sweep's table, from its folder."""
        if not self.is_sweep:
            raise RunFolderError(f"Run {self.id} is a {self.kind}, not a sweep; open it on the History page.")
        if self.status is not RunStatus.DONE:
            raise self._not_finished()
        from engine.sweep import load_sweep

        try:
            return load_sweep(self.run_dir)
        except QuantScopeError:
            raise self._not_finished() from None

    def data_text(self) -> str:
        """What the run compared on, from its results: samples, whether they had labels, and the calibration (two runs
        of one model on other data looked the same in History)."""
        folder = self.result_dir()
        if folder is None or self.is_sweep:
            return ""
        try:
            summary = json.loads((folder / "summary.json").read_text())
            calibration = summary["config"]["calibration"]
            if calibration == "percentile":
                calibration += f" {summary['config']['percentile']:g}"
            labelled = summary["task"].get("reference_accuracy") is not None
            return f"{summary['samples']} samples{', labelled' if labelled else ''}; {calibration}, {summary['config']['precision']}"
        except (OSError, ValueError, KeyError, TypeError):
            return ""

    def as_row(self) -> dict:
        return {"run": self.id, "status": self.status.value, "kind": self.kind, "model": self.model, "data": self.data_text(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started)),
                "snr_db": self.snr_db, "cosine": self.cosine, "top1_agreement": self.top1_agreement,
                "top_culprit": self.top_culprit or "", "fallback": ", ".join(self.fallback) or "-",
                "message": self.message, "folder": str(self.run_dir)}


def _process_identity(pid: int) -> str | None:
    """Boot id + start time of `pid` (Linux), so a reused pid is not mistaken for the process that wrote a row."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
        return f"{boot}:{stat.rsplit(')', 1)[1].split()[19]}"
    except (OSError, IndexError):
        return None


def _alive(pid: int, identity: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # somebody else's live process
        pass
    return identity is None or _process_identity(pid) == identity


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class RunIndex:
    """Opening an index creates it if needed and marks the runs of dead processes `incomplete`."""

    def __init__(self, root: str | os.PathLike) -> None:
        """root: the runs root (Settings.runs_root)."""
        self.root = Path(root)
        self.path = self.root / INDEX_FILE
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with closing(sqlite3.connect(self.path, timeout=30, isolation_level=None)) as db:
                db.execute("PRAGMA busy_timeout=30000")
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise RunFolderError(f"The run index {self.path} was written by a newer QuantScope (schema {version}); "
                                         "upgrade QuantScope or point QUANTSCOPE_RUNS_ROOT at another folder.")
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(_SCHEMA)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as err:
            raise RunFolderError(f"The run index {self.path} is unreadable ({err}); move it aside and QuantScope will start a "
                                 "new one (run folders are not touched).") from None
        except OSError as err:
            raise RunFolderError(f"Cannot create the run index in {self.root} ({err.strerror}); point QUANTSCOPE_RUNS_ROOT "
                                 "at a writable folder.") from None
        self.recovered = self.recover()

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """One short-lived connection per operation: safe from any thread or process; WAL lets readers and a writer overlap.
        A database error (the file deleted or damaged under a running server) becomes one sentence."""
        try:
            with closing(sqlite3.connect(self.path, timeout=30, isolation_level=None)) as db:
                db.execute("PRAGMA busy_timeout=30000")
                db.row_factory = sqlite3.Row
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
        except sqlite3.Error as err:
            raise RunFolderError(f"The run index {self.path} cannot be used ({err}); restart QuantScope, or move the file "
                                 "aside to start a new index (run folders are not touched).") from None

    # ------------------------------------------------------------------ workspaces
    def new_workspace(self) -> tuple[str, str]:
        """A fresh workspace: (id, used for its folder name; token, which alone opens it). Only the token's hash is stored."""
        ws, token = secrets.token_hex(8), secrets.token_urlsafe(24)
        with self._connect() as db:
            db.execute("INSERT INTO workspaces (id, token_sha256, created) VALUES (?, ?, ?)", (ws, _hash(token), time.time()))
        return ws, token

    def open_workspace(self, token: str | None) -> str | None:
        """The workspace this token opens, or None (unknown, malformed, or a workspace id given instead of its token)."""
        if not token or len(token) > 100:
            return None
        with self._connect() as db:
            row = db.execute("SELECT id FROM workspaces WHERE token_sha256 = ?", (_hash(token),)).fetchone()
        return row["id"] if row else None

    def workspace_dir(self, workspace: str) -> Path:
        if workspace == CLI_WORKSPACE or not workspace.isalnum():
            raise RunFolderError(f"'{workspace}' is not a dashboard workspace.")
        return self.root / workspace

    # ------------------------------------------------------------------ runs
    def start(self, workspace: str, kind: str, model: str, run_dir: str | os.PathLike | None = None) -> tuple[int, Path]:
        """Records a run as running before it does anything. Without `run_dir` the run gets a new folder
        ROOT/<workspace>/run_<id>; returns (id, folder)."""
        pid = os.getpid()
        with self._connect() as db:
            cur = db.execute(
                "INSERT INTO runs (workspace, kind, model, run_dir, status, started, host, pid, process) VALUES (?,?,?,?,?,?,?,?,?)",
                (workspace, kind, model, "", RunStatus.RUNNING.value, time.time(), socket.gethostname(), pid, _process_identity(pid)))
            run_id = int(cur.lastrowid)
            folder = Path(run_dir).resolve() if run_dir is not None else self.workspace_dir(workspace) / f"run_{run_id:04d}"
            db.execute("UPDATE runs SET run_dir = ? WHERE id = ?", (str(folder), run_id))
        return run_id, folder

    def finish(self, run_id: int, result: ComparisonResult) -> None:
        s = result.summary
        out = result.final_output()
        seq = len(RunFolder(result.run_dir).history_entries()) + 1  # archive_results moves these files to history/<seq>
        with self._connect() as db:
            db.execute(
                "UPDATE runs SET status=?, finished=?, seq=?, snr_db=?, cosine=?, top1_agreement=?, top_culprit=?, fallback=?, "
                "model=? WHERE id=?",
                # several outputs: every float output together, as the headline and the Compare page's first tile (the
                # first output alone read as the model's figure in History)
                (RunStatus.DONE.value, time.time(), seq, _finite(s.outputs_together_snr_db()), _finite(out.cosine), s.task.top1_agreement,
                 s.culprits[0].node if s.culprits else None, "\n".join(s.fallback), s.model, run_id))

    def finish_sweep(self, run_id: int, result: SweepResult) -> None:
        """A sweep is done: its row carries the best configuration's final-output figures and culprit, and says which it is."""
        best = result.best()
        what = f"best of {len(result.rows)} configurations: {best.config.label}" if best else f"{len(result.rows)} configurations, none best"
        with self._connect() as db:
            db.execute("UPDATE runs SET status=?, finished=?, snr_db=?, cosine=?, top1_agreement=?, top_culprit=?, message=? WHERE id=?",
                       (RunStatus.DONE.value, time.time(), _finite(best.snr_db) if best else None,
                        _finite(best.cosine) if best else None, best.top1_agreement if best else None,
                        best.culprit if best else None, what, run_id))

    def record_sweep(self, workspace: str, model: str, work: Callable[[Path], SweepResult], folder: str | os.PathLike) -> SweepResult:
        """Runs `work(folder)` as a recorded sweep (see record)."""
        with self.track(workspace, SWEEP_KIND, model, folder) as (run_id, out):
            result = work(out)
            self.finish_sweep(run_id, result)
        return result

    def fail(self, run_id: int, sentence: str, status: RunStatus = RunStatus.FAILED) -> None:
        with self._connect() as db:
            db.execute("UPDATE runs SET status=?, finished=?, message=? WHERE id=?", (status.value, time.time(), sentence, run_id))

    @contextmanager
    def track(self, workspace: str, kind: str, model: str, run_dir: str | os.PathLike | None = None) -> Iterator[tuple[int, Path]]:
        """`with index.track(...) as (run_id, folder): result = ...; index.finish(run_id, result)`. An error marks the
        run failed with its sentence, a cancel marks it cancelled; Ctrl-C marks it incomplete; SIGKILL leaves it running until the next open."""
        run_id, folder = self.start(workspace, kind, model, run_dir)
        try:
            yield run_id, folder
        except Cancelled as err:
            self.fail(run_id, str(err), RunStatus.CANCELLED)
            raise
        except QuantScopeError as err:
            self.fail(run_id, str(err))
            raise
        except Exception as err:
            self.fail(run_id, unexpected_error_sentence(err))
            raise
        except BaseException:
            self.fail(run_id, "Interrupted before it finished; earlier results are untouched.", RunStatus.INCOMPLETE)
            raise

    def record(self, workspace: str, kind: str, model: str, work: Callable[[Path], ComparisonResult],
               run_dir: str | os.PathLike | None = None) -> ComparisonResult:
        """Runs `work(folder)` as a recorded run: running before it starts, then done with its result or failed."""
        with self.track(workspace, kind, model, run_dir) as (run_id, folder):
            result = work(folder)
            self.finish(run_id, result)
        return result

    def recover(self) -> int:
        """Marks `running` rows of this host whose process is gone as incomplete; returns how many."""
        host = socket.gethostname()
        with self._connect() as db:
            rows = db.execute("SELECT id, pid, process FROM runs WHERE status = ? AND host = ?", (RunStatus.RUNNING.value, host)).fetchall()
            dead = [r["id"] for r in rows if not _alive(r["pid"], r["process"])]
            for run_id in dead:
                db.execute("UPDATE runs SET status=?, message=? WHERE id=?",
                           (RunStatus.INCOMPLETE.value, "Its process stopped before the run finished (killed or crashed); "
                            "earlier runs are untouched. Run it again.", run_id))
        return len(dead)

    def runs(self, workspace: str | None = None) -> list[RunRecord]:
        """Runs in start order: of one workspace, or (for the CLI) all."""
        with self._connect() as db:
            if workspace is None:
                rows = db.execute("SELECT * FROM runs ORDER BY id").fetchall()
            else:
                rows = db.execute("SELECT * FROM runs WHERE workspace = ? ORDER BY id", (workspace,)).fetchall()
        return [_record(r) for r in rows]

    def delete_folder(self, workspace: str, run_id: int | str) -> tuple[int, ...]:
        """Deletes a dashboard run's folder and every run recorded in it (its compare and rebuilds); returns their ids.
        Only a workspace's own runs, never while one of them runs, never a folder outside the workspace."""
        record = self.get(workspace, run_id)
        folder = record.run_dir
        if not folder.resolve().is_relative_to(self.workspace_dir(workspace).resolve()):
            raise RunFolderError(f"Run {record.id}'s folder is outside this workspace, so QuantScope does not delete it.")
        self.recover()
        trash = folder.with_name(f".deleting-{folder.name}")
        with self._connect() as db:
            rows = db.execute("SELECT id, status FROM runs WHERE workspace = ? AND run_dir = ?", (workspace, str(folder))).fetchall()
            if any(r["status"] == RunStatus.RUNNING.value for r in rows):
                raise RunFolderError(f"A run in {folder.name} is still running; wait for it to finish, then delete it.")
            moved = folder.exists()
            if moved:
                os.replace(folder, trash)  # one rename: the folder is either all there or gone
            try:
                db.execute("DELETE FROM runs WHERE workspace = ? AND run_dir = ?", (workspace, str(folder)))
            except BaseException:
                if moved:
                    os.replace(trash, folder)
                raise
        shutil.rmtree(trash, ignore_errors=True)
        return tuple(r["id"] for r in rows)

    def get(self, workspace: str, run_id: int | str) -> RunRecord:
        """A run of this workspace; any other id (another workspace's, unknown, not a number) is refused the same way."""
        text = str(run_id).strip()
        if not text.isdigit() or len(text) > 18:
            raise RunFolderError(f"'{text[:40]}' is not a run number; pick a run from the History page.")
        with self._connect() as db:
            row = db.execute("SELECT * FROM runs WHERE id = ? AND workspace = ?", (int(text), workspace)).fetchone()
        if row is None:
            raise RunFolderError(f"There is no run {int(text)} in this workspace; pick a run from the History page.")
        return _record(row)


def _finite(x: float) -> float | None:
    return None if math.isnan(x) else float(x)  # +inf (identical outputs) is kept


def _record(r: sqlite3.Row) -> RunRecord:
    return RunRecord(
        id=r["id"], workspace=r["workspace"], kind=r["kind"], model=r["model"], run_dir=Path(r["run_dir"]), status=RunStatus(r["status"]),
        started=r["started"], finished=r["finished"], seq=r["seq"], snr_db=r["snr_db"], cosine=r["cosine"],
        top1_agreement=r["top1_agreement"], top_culprit=r["top_culprit"],
        fallback=tuple(f for f in r["fallback"].split("\n") if f), message=r["message"])
