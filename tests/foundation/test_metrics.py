"""Metric arithmetic on small hand-checked cases."""
import pytest

from swarm.trainer.training.metrics import HARD_CLASS_F1, hard_class_f1, hard_classes, score, spread


def test_scores_by_hand() -> None:
    gold = ["a", "a", "b", "c"]
    pred = ["a", "b", "b", "a"]
    s = score(gold, pred, majority_label="a")
    assert s.micro_f1 == pytest.approx(0.5)
    # a: tp1 fp1 fn1 -> 0.5; b: tp1 fp1 -> 2/3; c: 0
    assert s.per_class == pytest.approx({"a": 0.5, "b": 2 / 3, "c": 0.0})
    assert s.macro_f1 == pytest.approx((0.5 + 2 / 3) / 3)
    assert s.hard_classes == ["c"]  # F1 < 0.5 is hard; exactly 0.5 is not
    # majority "a": a F1 = 2*2/(4+2) = 2/3, others 0
    assert s.majority_macro_f1 == pytest.approx((2 / 3) / 3)


def test_length_mismatch_and_empty() -> None:
    with pytest.raises(ValueError, match="2 gold labels but 1"):
        score(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no labelled columns"):
        score([], [])


def test_hard_classes_and_their_mean_f1() -> None:
    per_class = {"Date": 0.9, "Place": HARD_CLASS_F1, "Person": 0.2, "Book": 0.0}
    assert hard_classes(per_class) == ["Book", "Person"]  # below the bar, sorted; at it is not hard
    assert hard_class_f1(per_class, ["Person", "Book", "Movie"]) == pytest.approx(0.1)  # Movie unscored: left out
    assert hard_class_f1(per_class, ["Movie"]) is None
    assert score(["Book", "Date"], ["Date", "Date"]).hard_classes == ["Book"]


def test_spread_is_the_sample_standard_deviation() -> None:
    assert spread([0.8]) == 0.0
    assert spread([0.8, 0.9, 1.0]) == pytest.approx(0.1)
