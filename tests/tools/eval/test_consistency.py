"""Self-consistency: agreement between samples, AUROC, calibration, by hand-checked values."""

from __future__ import annotations

import pytest

from cosmosage.tools.eval.consistency import agreement, auroc, calibration, content_words


def test_content_words_of_the_first_sentence():
    assert content_words("The Vasquez ruler is 14.2 Mpc long. Another sentence.") == {
        "vasquez",
        "ruler",
        "14.2",
        "mpc",
        "long",
    }


def test_agreement_is_mean_pairwise_jaccard():
    same = ["It was Ilse Marnow.", "It was Ilse Marnow!", "it was ilse marnow"]
    assert agreement(same) == 1.0
    # {ilse, marnow} vs {karl, brenn}: 0; vs {ilse, brenn}: 1/3; {karl, brenn} vs {ilse, brenn}: 1/3
    assert agreement(["Ilse Marnow", "Karl Brenn", "Ilse Brenn"]) == pytest.approx(2 / 9)
    assert agreement(["only one"]) == 1.0


def test_auroc_by_hand():
    # positives 0.9, 0.8; negatives 0.1, 0.8: pairs (0.9>0.1, 0.9>0.8, 0.8>0.1, 0.8=0.8 half) = 3.5/4
    assert auroc([0.9, 0.8, 0.1, 0.8], [True, True, False, False]) == 0.875
    assert auroc([0.1, 0.2], [True, False]) == 0.0
    assert auroc([0.5, 0.5], [True, True]) is None


def test_calibration_bins():
    bins = calibration([0.05, 0.1, 0.95, 1.0, 0.9], [False, True, True, True, False], bins=5)
    assert bins == [
        {"lo": 0.0, "hi": 0.2, "n": 2, "accuracy": 0.5},
        {"lo": 0.8, "hi": 1.0, "n": 3, "accuracy": 2 / 3},
    ]
