"""Small inputs in the real formats for the corpus tests: a hand-written PDF, a LaTeX
source tarball, a recorded arXiv API page, a bulk-metadata snapshot."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

PROSE = (
    "The cosmic microwave background is the oldest light in the universe, released when "
    "the plasma of the early universe cooled enough for neutral hydrogen to form. Its nearly "
    "perfect blackbody spectrum and tiny temperature anisotropies tell us about the geometry, "
    "the matter content and the initial conditions of the cosmos. Measurements of the acoustic "
    "peaks in the angular power spectrum constrain the baryon density and the dark matter "
    "density with percent-level precision, and the damping tail constrains the number of "
    "relativistic species present in the early universe."
)


def prose(seed: int, words: int = 120) -> str:
    """Distinct English-looking text: PROSE words drawn at random with `seed`."""
    import random

    rng = random.Random(seed)
    base = PROSE.split()
    return f"Document {seed} says that " + " ".join(rng.choice(base) for _ in range(words)) + "."


def make_pdf(pages: list[list[str]]) -> bytes:
    """A minimal valid PDF with one Helvetica text line per string, one page per list."""
    objs: list[bytes] = []
    n_pages = len(pages)
    font_id = 3 + 2 * n_pages
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(n_pages))
    objs.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objs.append(f"<< /Type /Pages /Kids [{kids}] /Count {n_pages} >>".encode())
    for i, lines in enumerate(pages):
        content = (
            "BT /F1 11 Tf 14 TL 50 780 Td "
            + " ".join(
                "(" + ln.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ") Tj T*"
                for ln in lines
            )
            + " ET"
        )
        objs.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {4 + 2 * i} 0 R "
            f"/Resources << /Font << /F1 {font_id} 0 R >> >> >>".encode()
        )
        data = content.encode("latin-1")
        objs.append(b"<< /Length %d >>\nstream\n" % len(data) + data + b"\nendstream")
    objs.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for num, body in enumerate(objs, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % num + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1))
    for off in offsets:
        out.write(b"%010d 00000 n \n" % off)
    out.write(
        b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    )
    return out.getvalue()


LATEX_MAIN = r"""\documentclass{aastex631}
\usepackage{amsmath}
\newcommand{\Mpc}{\mathrm{Mpc}}
\title{Sound Waves in the \emph{Early} Universe}
\author{A. Writer}
\begin{document}
\maketitle
\begin{abstract}
We study acoustic oscillations in the photon-baryon fluid. % a private note
\end{abstract}
\section{Introduction}\label{sec:intro}
Before recombination the photons and baryons behaved as one fluid \citep{Peebles1970}.
The sound horizon is
\begin{equation}
r_d = \int_{z_d}^{\infty} \frac{c_s(z)}{H(z)} dz \approx 147\,\Mpc .
\end{equation}
\begin{figure}
\includegraphics{peak.pdf}
\caption{FIGURE CAPTION TEXT}
\end{figure}
\input{sections/method}
\begin{table}
TABLE CELL TEXT
\end{table}
\bibliographystyle{aasjournal}
\begin{thebibliography}{9}
\bibitem{Peebles1970} BIBLIOGRAPHY ENTRY TEXT
\end{thebibliography}
\end{document}
"""

LATEX_METHOD = r"""\subsection{Method}
We measure the peak position with $\alpha = D_V / r_d$ and 20\% precision. % hidden comment
"""


def make_tarball(path: Path, files: dict[str, str]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def atom_page(entries: list[dict], total: int, start: int) -> bytes:
    """An arXiv API response page, as export.arxiv.org writes it."""
    items = []
    for e in entries:
        cats = "".join(
            f'<category term="{c}" scheme="http://arxiv.org/schemas/atom"/>'
            for c in e["categories"]
        )
        items.append(
            f"""  <entry>
    <id>http://arxiv.org/abs/{e["id"]}v{e.get("version", 1)}</id>
    <updated>2021-03-01T12:00:00Z</updated>
    <published>{e.get("published", "2021-02-01T12:00:00Z")}</published>
    <title>{e["title"]}</title>
    <summary>  {e["abstract"]}
</summary>
    <author><name>Ada Writer</name></author>
    <link href="http://arxiv.org/abs/{e["id"]}v1" rel="alternate" type="text/html"/>
    <link title="pdf" href="http://arxiv.org/pdf/{e["id"]}v1" rel="related" type="application/pdf"/>
    <arxiv:primary_category xmlns:arxiv="http://arxiv.org/schemas/atom" term="{e["categories"][0]}" scheme="http://arxiv.org/schemas/atom"/>
    {cats}
  </entry>"""
        )
    body = "\n".join(items)
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <link href="http://arxiv.org/api/query?search_query%3Dcat%3Aastro-ph.CO" rel="self" type="application/atom+xml"/>
  <title type="html">ArXiv Query: search_query=cat:astro-ph.CO</title>
  <id>http://arxiv.org/api/recorded</id>
  <updated>2021-03-02T00:00:00-05:00</updated>
  <opensearch:totalResults xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/">{total}</opensearch:totalResults>
  <opensearch:startIndex xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/">{start}</opensearch:startIndex>
  <opensearch:itemsPerPage xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/">{len(entries)}</opensearch:itemsPerPage>
{body}
</feed>
""".encode()


ATOM_ERROR = b"""<?xml version="1.0" encoding="UTF-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <opensearch:totalResults xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/">1</opensearch:totalResults>
  <entry>
    <id>http://arxiv.org/api/errors#incorrect_id_format_for_1234.12345</id>
    <title>Error</title>
    <summary>incorrect id format for 1234.12345</summary>
  </entry>
</feed>
"""


def snapshot_line(
    arxiv_id: str, cats: str, created: str, license: str | None, abstract: str
) -> str:
    return json.dumps(
        {
            "id": arxiv_id,
            "submitter": "Ada Writer",
            "authors": "Ada Writer",
            "title": f"Paper {arxiv_id}",
            "comments": "10 pages",
            "journal-ref": None,
            "doi": None,
            "report-no": None,
            "categories": cats,
            "license": license,
            "abstract": abstract,
            "versions": [{"version": "v1", "created": created}],
            "update_date": "2021-05-01",
            "authors_parsed": [["Writer", "Ada", ""]],
        }
    )
