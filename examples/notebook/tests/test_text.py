"""Text extraction and the script writer, on their own (no processes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from notebook.extract import UnreadableSource, chunk, extract_text, sentences
from notebook.script import write_script

SPEAKERS = [{"name": "Ada"}, {"name": "Grace"}]


def tiny_pdf(text: str) -> bytes:
    """A one-page PDF whose text layer says ``text``."""
    content = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


@pytest.mark.parametrize(
    "name, body, expected",
    [
        ("a.txt", b"\xef\xbb\xbfOne  line.\n\n\n\nTwo.", "One line.\n\nTwo."),
        (
            "a.md",
            b"# Title\n\nSome **bold** and [a link](http://x).\n```\ncode\n```\n",
            "Title\n\nSome bold and a link.",
        ),
        (
            "a.html",
            b"<html><head><title>T</title><script>x()</script></head><body><p>Hello &amp; bye</p></body></html>",
            "Hello & bye",
        ),
        ("a.pdf", tiny_pdf("Text in a PDF."), "Text in a PDF."),
    ],
)
def test_text_comes_out_of_each_kind(tmp_path: Path, name: str, body: bytes, expected: str) -> None:
    path = tmp_path / name
    path.write_bytes(body)
    assert extract_text(path) == expected


def test_a_pdf_without_text_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "scan.pdf"
    path.write_bytes(tiny_pdf(""))
    with pytest.raises(UnreadableSource, match="no text layer"):
        extract_text(path)


def test_chunks_keep_whole_sentences_within_the_size() -> None:
    text = " ".join(f"Sentence {n} is here." for n in range(100))
    chunks = chunk(text, size=200)
    assert all(len(c) <= 200 for c in chunks)
    assert " ".join(chunks) == text
    assert all(c.endswith(".") for c in chunks)


def test_the_script_covers_short_content_in_order() -> None:
    content = "First point. Second point! Third point?"
    script = write_script(content, "Show", "", SPEAKERS, max_lines=20)
    texts = [line["text"] for line in script["dialogue"]]
    assert texts[1:-1] == sentences(content)
    speakers = [line["speaker"] for line in script["dialogue"]]
    assert all(a != b for a, b in zip(speakers, speakers[1:], strict=False)), "speakers take turns"
    assert sum(part["lines"] for part in script["outline"]) == 3


def test_long_content_keeps_its_most_telling_sentences_in_order() -> None:
    # Each filler word is said once; the topic's words come back.
    filler = [f"Alpha{n} beta{n} gamma{n}." for n in range(30)]
    content = " ".join(
        filler[:10]
        + ["Queues keep jobs safe."]
        + filler[10:20]
        + ["Jobs in queues survive crashes."]
        + filler[20:]
    )
    script = write_script(content, "Show", "", SPEAKERS, max_lines=4)
    body = [line["text"] for line in script["dialogue"][1:-1]]
    assert body == ["Queues keep jobs safe.", "Jobs in queues survive crashes."]
    # The same content gives the same script (a re-run resumes on it).
    assert write_script(content, "Show", "", SPEAKERS, max_lines=4) == script
