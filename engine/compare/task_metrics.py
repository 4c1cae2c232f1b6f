"""Task-level metrics on the final outputs: top-1 accuracy and agreement for classifier-shaped outputs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["TaskMetrics", "TaskAccumulator", "is_classifier_shaped"]


def is_classifier_shaped(arr: np.ndarray) -> bool:
    """N x classes scores, or N x classes x 1 x 1 as Caffe2-era exports write them (the model zoo's SqueezeNet and
    DenseNet-121 got no accuracy)."""
    return arr.ndim >= 2 and arr.shape[1] > 1 and all(d == 1 for d in arr.shape[2:])


@dataclass(frozen=True)
class TaskMetrics:
    output: str | None
    top1_agreement: float | None
    reference_accuracy: float | None
    candidate_accuracy: float | None
    samples: int

    @property
    def accuracy_drop(self) -> float | None:
        if self.reference_accuracy is None or self.candidate_accuracy is None:
            return None
        return self.reference_accuracy - self.candidate_accuracy

    def to_dict(self) -> dict:
        return {"output": self.output, "top1_agreement": self.top1_agreement, "reference_accuracy": self.reference_accuracy,
                "candidate_accuracy": self.candidate_accuracy, "accuracy_drop": self.accuracy_drop, "samples": self.samples}

    @classmethod
    def from_dict(cls, d: dict) -> TaskMetrics:
        def num(key: str) -> float | None:
            return None if d.get(key) is None else float(d[key])

        return cls(d.get("output"), num("top1_agreement"), num("reference_accuracy"), num("candidate_accuracy"), int(d.get("samples", 0)))


class TaskAccumulator:
    def __init__(self, output: str | None, labels: np.ndarray | None) -> None:
        self.output, self.labels = output, labels
        self.n = self.agree = self.ref_ok = self.cand_ok = 0

    def update(self, ref: np.ndarray, cand: np.ndarray) -> None:
        if self.output is None:
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
        has = self.labels is not None
        return TaskMetrics(self.output, self.agree / self.n, self.ref_ok / self.n if has else None,
                           self.cand_ok / self.n if has else None, self.n)
