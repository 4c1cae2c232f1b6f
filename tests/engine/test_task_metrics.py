"""Task metrics with known answers: a CTC recogniser's decoded text against FP32's, batch-major or time-major."""

from __future__ import annotations

import numpy as np

from engine.compare.task_metrics import TaskAccumulator, TaskMetrics, ctc_batch_axis, ctc_greedy


def _scores(best: np.ndarray, classes: int = 40) -> np.ndarray:
    """N x T x classes scores whose best class at each position is `best` (N x T)."""
    out = np.zeros((*best.shape, classes), np.float32)
    np.put_along_axis(out, best[..., None], 1.0, axis=2)
    return out


def test_greedy_decoding_merges_repeats_and_drops_blanks():
    assert ctc_greedy(np.array([0, 3, 3, 0, 3, 5, 5, 0])) == (3, 3, 5)
    assert ctc_greedy(np.array([0, 0, 0])) == ()


def test_ctc_scores_are_told_from_other_rank_3_outputs():
    best = np.zeros((4, 20), np.int64)
    best[:, 5], best[:, 9] = 7, 12
    scores = _scores(best)
    assert ctc_batch_axis(scores, 4) == 0  # N x T x classes (PP-OCRv4's recogniser)
    assert ctc_batch_axis(scores.transpose(1, 0, 2), 4) == 1  # T x N x classes (ddddocr's)
    assert ctc_batch_axis(scores[..., :6], 4) is None  # six columns: a detector's boxes, objectness and a class (YOLOX)
    assert ctc_batch_axis(_scores(np.full((4, 20), 7)), 4) is None  # no blank anywhere: not CTC scores
    assert ctc_batch_axis(scores, 3) is None  # no axis holds the batch
    assert ctc_batch_axis(scores[0], 4) is None  # rank 2
    assert ctc_batch_axis(_scores(np.zeros((4, 4), np.int64)), 4) is None  # as many time steps as samples: which is which?
    # a YOLOv5 head, N x anchors x (x, y, w, h, objectness, 80 classes) in pixels: x wins about half the rows, y the rest
    rng = np.random.default_rng(0)
    head = rng.random((2, 300, 85)).astype(np.float32)
    head[..., :2] = rng.uniform(0, 640, (2, 300, 2))
    head[..., 2:4] = rng.uniform(0, 60, (2, 300, 2))
    assert 0.3 < (head.argmax(2) == 0).mean() < 0.7 and ctc_batch_axis(head, 2) is None
    assert ctc_batch_axis(np.zeros((4, 20, 40), np.float32), 4) is None  # rows of ties (zeros after a ReLU)


def test_text_agreement_counts_samples_whose_decoded_text_is_unchanged():
    ref = np.zeros((3, 6), np.int64)
    ref[:, 1], ref[:, 3] = 4, 9  # every sample reads (4, 9)
    cand = ref.copy()
    cand[0, 2] = 4  # a repeat merged: still (4, 9)
    cand[1, 3] = 8  # another character: (4, 8)
    cand[2, 4] = 9  # a repeat after the character: still (4, 9)
    for axis in (0, 1):
        acc = TaskAccumulator("y", None, ctc_axis=axis)
        r, c = _scores(ref), _scores(cand)
        acc.update(*((r, c) if axis == 0 else (r.transpose(1, 0, 2), c.transpose(1, 0, 2))))
        acc.update(r[:1] if axis == 0 else r[:1].transpose(1, 0, 2), r[:1] if axis == 0 else r[:1].transpose(1, 0, 2))
        t = acc.result()
        assert (t.output, t.samples, t.text_agreement, t.top1_agreement) == ("y", 4, 3 / 4, None)
        assert TaskMetrics.from_dict(t.to_dict()) == t
