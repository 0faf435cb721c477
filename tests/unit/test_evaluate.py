"""Metrics: accuracy, macro-F1 and per-class scores computed as defined."""

from __future__ import annotations

import numpy as np

from kws.evaluate import classification_metrics, describe_confusions, top_confusions
from kws.plots import plot_confusion_matrix


def test_metrics_match_hand_computed_values(tmp_path) -> None:
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 0])
    m = classification_metrics(y_true, y_pred, ["a", "b", "c"])
    assert m["accuracy"] == 4 / 6
    assert m["per_class"]["a"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert m["per_class"]["b"]["precision"] == round(2 / 3, 4)
    assert m["per_class"]["c"]["f1"] == round(2 / 3, 4)
    assert abs(m["macro_f1"] - (0.5 + 0.8 + 2 / 3) / 3) < 1e-9
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    png = tmp_path / "cm.png"
    plot_confusion_matrix(m["confusion_matrix"], ["a", "b", "c"], png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_macro_f1_ignores_classes_absent_from_the_truth() -> None:
    m = classification_metrics(np.array([0, 0]), np.array([0, 0]), ["a", "b"])
    assert m["macro_f1"] == 1.0 and m["accuracy"] == 1.0


def test_top_confusions_lists_the_most_frequent_mistakes_first() -> None:
    cm = [[5, 1, 0], [0, 4, 3], [1, 0, 6]]  # true b predicted as c three times, ...
    assert top_confusions(cm, ["a", "b", "c"], n=2) == [
        {"true": "b", "predicted": "c", "count": 3},
        {"true": "a", "predicted": "b", "count": 1},  # ties: in label order
    ]
    assert top_confusions([[2, 0], [0, 3]], ["a", "b"]) == []


def test_confusions_read_as_one_line() -> None:
    mistakes = top_confusions([[5, 1, 0], [0, 4, 3], [1, 0, 6]], ["a", "b", "c"])
    assert describe_confusions(mistakes) == "b->c 3, a->b 1, c->a 1"
    assert describe_confusions([]) == "-"
