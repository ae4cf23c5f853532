"""Drift from the base: KL over the base's own answers, and the share of changed answers."""

from __future__ import annotations

import math

import pytest

from cosmosage.tools.eval.drift import changed_share, general_items, kl_to_base, sequences


@pytest.fixture(scope="module")
def nudged(tiny_model, tmp_path_factory):
    """The tiny model with every weight moved a little: a model that has drifted."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("nudged")
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(out)
    return out


ITEMS = [
    ({"prompt": "What is the CMB?"}, "the cosmic microwave background"),
    ({"prompt": "Hi"}, "hello"),
]


def test_kl_is_zero_for_the_base_itself_and_positive_for_a_drifted_model(tiny_model, nudged):
    same = kl_to_base(tiny_model, tiny_model, ITEMS)
    assert abs(same["kl"]) < 1e-6 and same["tokens"] > 4
    moved = kl_to_base(tiny_model, nudged, ITEMS)
    assert moved["kl"] > 1e-3 and len(moved["per_prompt"]) == 2
    # the mean is over tokens: the per-prompt means weighted by their answers' lengths
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    lengths = [len(ids) - start for ids, start in sequences(tok, ITEMS)]
    weighted = sum(k * n for k, n in zip(moved["per_prompt"], lengths, strict=True)) / sum(lengths)
    assert math.isclose(moved["kl"], weighted, rel_tol=1e-5) and sum(lengths) == moved["tokens"]


def test_changed_share_counts_general_answers_that_differ_from_the_base():
    rows = [
        {"kind": "general", "prompt": "a", "base": "Paris.", "tuned": "Paris."},
        {"kind": "general", "prompt": "b", "base": "Four", "tuned": "Four  "},
        {"kind": "general", "prompt": "c", "base": "Blue", "tuned": "Green"},
        {"kind": "domain", "prompt": "d", "base": "x", "tuned": "y"},
    ]
    assert changed_share(rows, "tuned") == pytest.approx(1 / 3)
    assert [p["prompt"] for p, _ in general_items(rows)] == ["a", "b", "c"]
    assert changed_share([{"kind": "domain", "base": "x", "tuned": "y"}], "tuned") is None


def test_kl_matches_torch_kl_div_computed_by_hand(tiny_model, nudged):
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    ((ids, start),) = sequences(tok, ITEMS[:1])
    x = torch.tensor([ids])
    with torch.no_grad():
        p = F.log_softmax(AutoModelForCausalLM.from_pretrained(tiny_model)(x).logits[0], -1)
        q = F.log_softmax(AutoModelForCausalLM.from_pretrained(nudged)(x).logits[0], -1)
    # positions start-1 .. len-2 predict the answer tokens start .. len-1
    by_hand = F.kl_div(q[start - 1 : -1], p[start - 1 : -1], log_target=True, reduction="none")
    expected = float(by_hand.sum(-1).mean())
    assert math.isclose(kl_to_base(tiny_model, nudged, ITEMS[:1])["kl"], expected, rel_tol=1e-4)
