"""Each cleaning rule on small inline texts, and the filters that drop documents."""

from __future__ import annotations

from pathlib import Path

import pytest

from cosmosage.dataprep.corpus import clean
from cosmosage.dataprep.corpus.filters import QualityConfig, quality_reason
from cosmosage.dataprep.records import reason_group

ROOT = Path(__file__).resolve().parents[3]


def test_fix_unicode_repairs_mojibake_ligatures_and_controls():
    text = "The caf\u00c3\u00a9 \ufb01eld\u00ad trick\x00\x07 \u201cquoted\u201d\u00a0here\ufeff"
    assert clean.fix_unicode(text) == "The café field trick \u201cquoted\u201d here"


def test_fix_unicode_drops_controls_from_ascii_text_and_keeps_layout():
    text = "line one\r\nline\x00 two\x7f\tand\x1b tab\fnext page\n"
    assert clean.fix_unicode(text) == "line one\nline two\tand tab\fnext page\n"
    plain = "nothing to drop\n\tat all"
    assert clean.fix_unicode(plain) is plain


def test_clean_text_keeps_one_blank_line_between_paragraphs():
    text = "First paragraph.\n\n\n\n   \n\t\nSecond.\n12\n\n\nThird.\n\n"
    assert clean.clean_text(text) == "First paragraph.\n\nSecond.\n\nThird."


def test_fix_unicode_keeps_math_symbols():
    text = "We find \u03a9_m = 0.31 \u00b1 0.01 and \u222b f(x) dx \u2248 1."
    assert clean.fix_unicode(text) == text


@pytest.mark.parametrize("line", ["12", "  - 12 -", "Page 3 of 40", "xiv", "\u2014 7 \u2014"])
def test_page_number_lines_are_dropped(line):
    out = clean.remove_page_numbers(f"first paragraph\n{line}\nsecond paragraph")
    assert out == "first paragraph\nsecond paragraph"


def test_page_numbers_inside_sentences_are_kept():
    text = "There are 12 galaxies in the group.\nWe observed 3 of 40 fields."
    assert clean.remove_page_numbers(text) == text


def test_running_headers_and_footers_on_pages():
    pages = [
        f"JOURNAL OF COSMOLOGY {100 + i}\nBody text of page {i} about {topic}.\nMore words on {topic}.\nSmith et al. page {i}"
        for i, topic in enumerate(
            ["dark energy", "inflation", "lensing", "neutrinos", "reionization"]
        )
    ]
    out = clean.remove_running_headers("\f".join(pages))
    assert "JOURNAL OF COSMOLOGY" not in out
    assert "Smith et al." not in out
    assert out.count("Body text of page") == 5


def test_running_headers_without_page_breaks():
    text = "\n".join(
        f"{12 + 2 * i} THE EXPANDING UNIVERSE\nParagraph {i} explains the scale factor and Hubble law.\n"
        for i in range(4)
    )
    out = clean.remove_running_headers(text)
    assert "THE EXPANDING UNIVERSE" not in out
    assert out.count("explains the scale factor") == 4


def test_a_line_with_a_number_that_occurs_once_is_kept():
    text = "Table 2 lists the results\nThe fit gives 3 parameters"
    assert clean.remove_running_headers(text) == text


def test_boilerplate_pages_are_dropped():
    notice = "Copyright 2020 Open Press. All rights reserved."
    pages = [
        notice,
        "Chapter one text about inflation.",
        "This page intentionally left blank",
        notice,
        "Chapter two text.",
    ]
    out = clean.remove_boilerplate_pages("\f".join(pages))
    assert out.split("\f") == [notice, "Chapter one text about inflation.", "Chapter two text."]


def test_dehyphenate_joins_lowercase_breaks_only():
    assert clean.dehyphenate("the expan-\nsion of space") == "the expansion of space"
    assert clean.dehyphenate("the Lyman-\nAlpha forest") == "the Lyman-\nAlpha forest"


def test_unwrap_joins_wrapped_lines_but_keeps_paragraphs_lists_and_math():
    text = "A wrapped line\nthat continues here.\n\n- item one\n- item two\n$$\nx = 1\n$$"
    out = clean.unwrap_lines(text)
    assert out.startswith("A wrapped line that continues here.\n\n- item one\n- item two\n$$")


def test_reference_section_is_cut_up_to_the_appendix():
    text = "## 5 Conclusions\nWe conclude.\n\n## References\n\nAuthor A. 2019, ApJ, 1, 2\n\n## Appendix A\nDerivation of the estimator."
    out = clean.remove_references(text)
    assert "Author A." not in out and "References" not in out
    assert "We conclude." in out and "Derivation of the estimator." in out


def test_reference_heading_in_plain_text_cuts_to_end():
    out = clean.remove_references("Body text.\n\nREFERENCES\n[1] Smith J., ApJ 800, 1 (2015)\n")
    assert out.strip() == "Body text."


def test_runs_of_citation_lines_without_heading_are_dropped():
    refs = "\n".join(f"[{i}] Author {i}, Phys. Rev. D 10{i}, 1 (201{i})" for i in range(1, 5))
    out = clean.remove_references(f"Body text stays.\n{refs}\nClosing words.")
    assert out == "Body text stays.\nClosing words."


def test_figure_residue_is_dropped_but_math_kept():
    text = "Text before.\n![plot](fig1.png)\n0.0 0.5 1.0 1.5 2.0\na\nb\nc\n$0.1 + 0.2 = 0.3$\nText after."
    out = clean.remove_figure_residue(text)
    assert "fig1.png" not in out and "0.5 1.0" not in out and "\na\nb\nc\n" not in out
    assert "$0.1 + 0.2 = 0.3$" in out and "Text before." in out and "Text after." in out


def test_clean_text_keeps_display_math_and_structure():
    text = "# Title\n\nProse with $H_0$.\n\n$$\nr_d = \\int_{z_d}^{\\infty} \\frac{c_s}{H} dz\n$$\n\n## References\n\nX, 2020"
    out = clean.clean_text(text)
    assert "$$\nr_d = \\int_{z_d}^{\\infty} \\frac{c_s}{H} dz\n$$" in out
    assert out.startswith("# Title") and "X, 2020" not in out


def test_clean_text_on_pdf_pages():
    topics = ["redshift", "distance", "luminosity", "parallax"]
    pages = [
        f"Running Head {i}\nOn {t}: the lumin-\nosity of a source and\nits {t}.\n{i + 1}"
        for i, t in enumerate(topics)
    ]
    pages.insert(2, "Printed on recycled paper.")
    pages.append("Printed on recycled paper.")
    out = clean.clean_text("\f".join(pages), kind="pdf")
    assert "Running Head" not in out
    assert out.count("the luminosity of a source and its") == 4
    assert out.count("Printed on recycled paper.") == 1
    assert not any(ch.isdigit() for ch in out)


def test_samples_survive_cleaning_and_filters():
    for path in sorted((ROOT / "samples").glob("*/*.md")):
        out = clean.clean_text(path.read_text())
        if path.parent.name in ("papers", "textbook"):
            assert "$" in out, path  # the math survives
        assert quality_reason(out) is None, path


# ------------------------------------------------------------------ filters

GOOD = (
    " ".join(
        ["The expansion of the universe is described by the scale factor, which grows with time."]
        * 1
    )
    * 1
)


def english(n: int = 80) -> str:
    words = "the universe is expanding and the galaxies recede from us at speeds that grow with their distance".split()
    return " ".join(words[i % len(words)] + ("" if i % 9 else f"{i}") for i in range(n))


def test_too_short():
    assert reason_group(quality_reason("A few words only.")) == "too short"


def test_symbol_ratio():
    junk = " ".join(["#@!% ^&*() {}[] <>|~ =+-_ ;:'\" ,./? word"] * 20)
    assert reason_group(quality_reason(junk)) == "symbol ratio"


def test_repeated_ngrams():
    text = " ".join(["the same sentence repeats over and over again"] * 30)
    assert reason_group(quality_reason(text)) == "repeated n-grams"


def test_character_runs():
    text = english() + " " + "=" * 200 + " " + "x" * 100
    assert reason_group(quality_reason(text)) == "character runs"


def test_not_english():
    german = " ".join(
        [
            "Die Expansion des Universums wird durch den Skalenfaktor beschrieben, der mit der Zeit wächst und"
        ]
        * 3
        + [
            "Galaxien entfernen sich von uns mit Geschwindigkeiten, die mit ihrer Entfernung zunehmen."
        ]
        * 3
    )
    cfg = QualityConfig(max_dup_ngram_ratio=1.0)
    assert reason_group(quality_reason(german, cfg)) == "not English"
    assert quality_reason(german, QualityConfig(max_dup_ngram_ratio=1.0, english=False)) is None


def test_english_prose_is_kept():
    assert quality_reason(english()) is None
