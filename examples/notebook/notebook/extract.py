"""Text out of an uploaded source (.txt, .md, .html, .pdf), and the text
cut into chunks. Anything that cannot be read raises ``UnreadableSource``
with a message a person can act on; the command marks it permanent."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

from pypdf import PdfReader
from pypdf.errors import PdfReadError

SOURCE_TYPES = {".txt": "text", ".md": "markdown", ".html": "html", ".htm": "html", ".pdf": "pdf"}
CHUNK_CHARS = 1200


class UnreadableSource(Exception):
    """The file holds no text this app can read. Retrying cannot help."""


def kind_of(filename: str) -> str | None:
    return SOURCE_TYPES.get(Path(filename).suffix.lower())


def extract_text(path: Path) -> str:
    kind = kind_of(path.name)
    if kind is None:
        raise UnreadableSource(f"{path.name}: not a .txt, .md, .html or .pdf file")
    if kind == "pdf":
        text = _pdf_text(path)
    else:
        raw = path.read_bytes()
        try:
            decoded = raw.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            raise UnreadableSource(
                f"{path.name}: not UTF-8 text (byte {err.start} is {raw[err.start]:#04x})"
            ) from None
        text = {"text": str, "markdown": _markdown_text, "html": _html_text}[kind](decoded)
    text = normalize(text)
    if not text:
        raise UnreadableSource(f"{path.name}: no text in it")
    return text


def normalize(text: str) -> str:
    """Runs of spaces become one, runs of blank lines one blank line."""
    lines = [" ".join(line.split()) for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _pdf_text(path: Path) -> str:
    try:
        reader = PdfReader(path)
        if reader.is_encrypted:
            raise UnreadableSource(f"{path.name}: the PDF is encrypted")
        text = "\n\n".join(page.extract_text() or "" for page in reader.pages)
    except UnreadableSource:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError) as err:
        raise UnreadableSource(f"{path.name}: not a readable PDF ({err})") from None
    if not text.strip():
        raise UnreadableSource(f"{path.name}: the PDF has no text layer (a scanned image?)")
    return text


def _markdown_text(text: str) -> str:
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    text = re.sub(r"!\[[^\]]*\]\([^)]*\)", "", text)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"^\s{0,3}(#{1,6}|>|[-*+]|\d+[.)])\s+", "", text, flags=re.M)
    return re.sub(r"(\*\*|__|\*|_|`)(\S.*?\S|\S)\1", r"\2", text)


class _TextOfHtml(HTMLParser):
    SKIPPED = {"script", "style", "head", "template", "noscript"}
    BLOCKS = {"p", "div", "br", "li", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "section"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: object) -> None:
        if tag in self.SKIPPED:
            self.skipping += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIPPED and self.skipping:
            self.skipping -= 1
        elif tag in self.BLOCKS:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(data)


def _html_text(text: str) -> str:
    parser = _TextOfHtml()
    parser.feed(text)
    parser.close()
    return "".join(parser.parts)


def sentences(text: str) -> list[str]:
    """The text's sentences, in order (a paragraph break ends one too)."""
    found = []
    for paragraph in re.split(r"\n\s*\n", text):
        flat = " ".join(paragraph.split())
        found += [s.strip() for s in re.split(r"(?<=[.!?])\s+(?=\S)", flat) if s.strip()]
    return found


def chunk(text: str, size: int = CHUNK_CHARS) -> list[str]:
    """Whole sentences packed into chunks of at most ``size`` characters
    (a longer sentence is a chunk of its own)."""
    chunks: list[str] = []
    current = ""
    for sentence in sentences(text):
        if current and len(current) + 1 + len(sentence) > size:
            chunks.append(current)
            current = sentence
        else:
            current = f"{current} {sentence}" if current else sentence
    if current:
        chunks.append(current)
    return chunks
