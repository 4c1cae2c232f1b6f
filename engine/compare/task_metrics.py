"""Task-level metrics on the final outputs: top-1 accuracy and agreement for classifier-shaped outputs, and for a CTC
text recogniser's scores whether the greedily decoded text is the same as FP32's."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["TaskMetrics", "TaskAccumulator", "is_classifier_shaped", "ctc_batch_axis", "ctc_greedy", "task_output"]

CTC_MIN_CLASSES = 32  # a recogniser's alphabet
CTC_MIN_BLANK = 0.3  # blank (class 0) wins at least this share of positions in CTC scores
# the other winners are characters: at least two classes, none with most of the places. A YOLOv5 head (N x 25200 x 85,
# box x and y in pixels first) passes the two rules above with its x column, but y then wins nearly every other place;
# rows of zeros (ties) give class 0 and nothing else
CTC_MIN_SYMBOLS, CTC_MAX_SHARE = 2, 0.75


def is_classifier_shaped(arr: np.ndarray) -> bool:
    """N x classes scores, or N x classes x 1 x 1 as Caffe2-era exports write them (the model zoo's SqueezeNet and
    DenseNet-121 got no accuracy)."""
    return arr.ndim >= 2 and arr.shape[1] > 1 and all(d == 1 for d in arr.shape[2:])


def ctc_batch_axis(arr: np.ndarray, batch: int) -> int | None:
    """The batch axis of a CTC recogniser's scores, or None where `arr` does not look like them: rank 3, at least
    CTC_MIN_CLASSES classes on the last axis, the batch on axis 0 (N x T x classes: PP-OCRv4) or 1 (T x N x classes:
    ddddocr) but not both, blank (class 0, the PaddleOCR and ddddocr convention) the best class at CTC_MIN_BLANK of
    positions, and the other winners spread over characters (CTC_MIN_SYMBOLS, CTC_MAX_SHARE)."""
    if arr.ndim != 3 or arr.shape[2] < CTC_MIN_CLASSES or arr.dtype.kind != "f":
        return None
    axes = [a for a in (0, 1) if arr.shape[a] == batch]
    if len(axes) != 1:  # neither, or both (time steps as many as the samples): which is time cannot be told
        return None
    best = arr.argmax(axis=2)
    chars = best[best != 0]
    if (best == 0).mean() < CTC_MIN_BLANK or len(np.unique(chars)) < CTC_MIN_SYMBOLS \
            or np.bincount(chars).max() > CTC_MAX_SHARE * len(chars):
        return None
    return axes[0]


def task_output(outputs: Sequence[str], ref: dict[str, np.ndarray], batch: int) -> tuple[str | None, int | None]:
    """(the output task metrics are of, its CTC batch axis): the first classifier-shaped output (axis None), else the
    first holding a CTC recogniser's scores, else (None, None). `ref`: one batch of `batch` samples' reference outputs."""
    classes = next((o for o in outputs if o in ref and is_classifier_shaped(ref[o])), None)
    if classes is not None:
        return classes, None
    return next(((o, ax) for o in outputs if o in ref and (ax := ctc_batch_axis(ref[o], batch)) is not None), (None, None))


def ctc_greedy(best: np.ndarray) -> tuple[int, ...]:
    """Greedy CTC decoding of one sample's best classes over time: repeats merged, blanks (0) dropped."""
    keep = np.r_[True, best[1:] != best[:-1]] & (best != 0)
    return tuple(int(k) for k in best[keep])


@dataclass(frozen=True)
class TaskMetrics:
    output: str | None
    top1_agreement: float | None
    reference_accuracy: float | None
    candidate_accuracy: float | None
    samples: int
    text_agreement: float | None = None  # a CTC recogniser's output: samples whose decoded text equals FP32's

    @property
    def accuracy_drop(self) -> float | None:
        if self.reference_accuracy is None or self.candidate_accuracy is None:
            return None
        return self.reference_accuracy - self.candidate_accuracy

    def to_dict(self) -> dict:
        return {"output": self.output, "top1_agreement": self.top1_agreement, "reference_accuracy": self.reference_accuracy,
                "candidate_accuracy": self.candidate_accuracy, "accuracy_drop": self.accuracy_drop, "samples": self.samples,
                "text_agreement": self.text_agreement}

    @classmethod
    def from_dict(cls, d: dict) -> TaskMetrics:
        def num(key: str) -> float | None:
            return None if d.get(key) is None else float(d[key])

        return cls(d.get("output"), num("top1_agreement"), num("reference_accuracy"), num("candidate_accuracy"), int(d.get("samples", 0)),
                   num("text_agreement"))


class TaskAccumulator:
    """ctc_axis: `output` holds CTC scores with the batch on this axis (ctc_batch_axis): the decoded texts are compared,
    not top-1 classes."""

    def __init__(self, output: str | None, labels: np.ndarray | None, ctc_axis: int | None = None) -> None:
        self.output, self.labels, self.ctc_axis = output, labels, ctc_axis
        self.n = self.agree = self.ref_ok = self.cand_ok = 0

    def update(self, ref: np.ndarray, cand: np.ndarray) -> None:
        if self.output is None:
            return
        if self.ctc_axis is not None:
            r, c = np.moveaxis(ref.argmax(axis=2), self.ctc_axis, 0), np.moveaxis(cand.argmax(axis=2), self.ctc_axis, 0)
            self.agree += sum(ctc_greedy(a) == ctc_greedy(b) for a, b in zip(r, c))
            self.n += len(r)
            return
        r, c = ref.reshape(len(ref), -1).argmax(axis=1), cand.reshape(len(cand), -1).argmax(axis=1)
        self.agree += int((r == c).sum())
        if self.labels is not None:
            y = self.labels[self.n : self.n + len(r)]
            self.ref_ok += int((r == y).sum())
            self.cand_ok += int((c == y).sum())
        self.n += len(r)

    def result(self) -> TaskMetrics:
        if self.output is None or self.n == 0:
            return TaskMetrics(None, None, None, None, self.n)
        if self.ctc_axis is not None:
            return TaskMetrics(self.output, None, None, None, self.n, self.agree / self.n)
        has = self.labels is not None
        return TaskMetrics(self.output, self.agree / self.n, self.ref_ok / self.n if has else None,
                           self.cand_ok / self.n if has else None, self.n)
