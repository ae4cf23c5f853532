"""Fixtures of the corpus tests."""

from __future__ import annotations

import pytest

from tests.dataprep.corpus.fixtures import prose

GERMAN = (
    "Die Galaxien entfernen sich mit einer Geschwindigkeit von uns, die mit ihrem Abstand wächst. "
    "Diese Beobachtung führte zur Vorstellung eines expandierenden Universums, dessen Geometrie durch "
    "die Friedmann-Gleichungen beschrieben wird. Der Skalenfaktor nimmt mit der Zeit zu, und das Licht "
    "ferner Quellen wird zu größeren Wellenlängen verschoben. Aus der Rotverschiebung vieler Galaxien "
    "lässt sich die Hubble-Konstante bestimmen, deren genauer Wert heute lebhaft diskutiert wird. "
    "Messungen der kosmischen Hintergrundstrahlung liefern einen etwas kleineren Wert als lokale Messungen "
    "mit Cepheiden und Supernovae, und niemand weiß bisher, woher dieser Unterschied kommt."
)


@pytest.fixture
def corpus_dir(tmp_path):
    """Ten documents, one exact and one near duplicate, one German, one too short."""
    d = tmp_path / "docs"
    d.mkdir()
    for i in range(10):
        (d / f"doc{i:02d}.md").write_text(
            f"# Doc {i}\n\n" + "\n\n".join(prose(100 * i + k, 90) for k in range(3))
        )
    (d / "dup_exact.md").write_text((d / "doc03.md").read_text().upper())
    words = (d / "doc05.md").read_text().split(" ")
    words[40] = "changed"
    (d / "dup_near.md").write_text(" ".join(words))
    (d / "german.md").write_text(GERMAN)
    (d / "short.md").write_text("Only a few words here.")
    return d
