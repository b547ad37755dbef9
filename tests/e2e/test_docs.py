"""The README and docs/ stand alone: a reader who has only the repository
can follow every reference in them."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_docs_do_not_send_readers_outside_the_repository():
    for doc in DOCS:
        text = doc.read_text()
        for bad in ("DESIGN.md", "../shared", "NOTES-"):
            assert bad not in text, f"{doc.relative_to(ROOT)} names {bad}"
        # a section sign is only for RFCs ("RFC 9110 §13.1.1")
        for m in re.finditer(r"§\s*\d", text):
            before = text[max(0, m.start() - 12):m.start()]
            assert re.search(r"RFC \d+ $", before), \
                f"{doc.relative_to(ROOT)}: '{text[m.start() - 30:m.end() + 10]}' points at an outside section"


def test_relative_links_and_paths_in_the_docs_exist():
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", doc.read_text()):
            assert (doc.parent / target).exists(), f"{doc.relative_to(ROOT)} links to missing {target}"
