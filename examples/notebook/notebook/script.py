"""An episode's outline and its two-voice dialogue, written from the
content without a language model: the content's own sentences, the most
telling ones when there are more than the episode has lines for, read in
their original order by the two speakers in turn, between an opening and
a closing line. The same content and profile always give the same script,
which is what lets a re-run continue from a checkpoint."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from .extract import sentences

# Words that say nothing about a text's subject.
STOP_WORDS = set(
    "a an and are as at be been but by can do does for from has have he her his how i if in"
    " into is it its it's me my no not of on or our she so than that the their them then there"
    " these they this to too us was we were what when where which while who why will with"
    " would you your".split()
)
SEGMENTS = 3


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def _key_words(text: str, count: int) -> list[str]:
    counted = Counter(w for w in words(text) if w not in STOP_WORDS and len(w) > 2)
    return [w for w, _ in counted.most_common(count)]


def pick_sentences(content: str, room: int) -> list[str]:
    """At most ``room`` sentences of ``content``, in order: all of them if
    they fit, else those whose words are most frequent in the whole text."""
    found = sentences(content)
    if len(found) <= room:
        return found
    weight = Counter(w for w in words(content) if w not in STOP_WORDS)

    def score(sentence: str) -> float:
        terms = [w for w in words(sentence) if w not in STOP_WORDS]
        return sum(weight[w] for w in terms) / (len(terms) + 1)

    best = sorted(range(len(found)), key=lambda i: (-score(found[i]), i))[:room]
    return [found[i] for i in sorted(best)]


def write_script(
    content: str,
    episode_name: str,
    briefing: str,
    speakers: list[dict[str, Any]],
    max_lines: int,
) -> dict[str, Any]:
    """``{"outline": [...], "dialogue": [{"speaker", "text"}, ...]}``."""
    if len(speakers) < 2:
        raise ValueError("a speaker profile needs two speakers")
    first, second = speakers[0]["name"], speakers[1]["name"]
    body = pick_sentences(content, max(1, max_lines - 2))
    if not body:
        raise ValueError("the content has no sentences to talk about")
    per_segment = -(-len(body) // SEGMENTS)
    outline = []
    for start in range(0, len(body), per_segment):
        part = body[start : start + per_segment]
        outline.append(
            {
                "title": ", ".join(_key_words(" ".join(part), 3)) or "the content",
                "lines": len(part),
            }
        )
    dialogue = [
        {
            "speaker": first,
            "text": f"Welcome to {episode_name}. I am {first}, and with me is {second}.",
        }
    ]
    for i, sentence in enumerate(body):
        dialogue.append({"speaker": second if i % 2 == 0 else first, "text": sentence})
    closing = first if dialogue[-1]["speaker"] == second else second
    dialogue.append({"speaker": closing, "text": f"That was {episode_name}. Thanks for listening."})
    return {
        "briefing": briefing,
        "written_by": "extractive",
        "outline": outline,
        "dialogue": dialogue,
    }
