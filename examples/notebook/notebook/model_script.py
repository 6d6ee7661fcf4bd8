"""An episode's script written by a language model, when one is
configured: any server that speaks the OpenAI chat-completions protocol
(OpenAI, a local Ollama or vLLM, ...), named by ``NOTEBOOK_LLM_URL``
(its base, e.g. ``http://127.0.0.1:11434/v1``), ``NOTEBOOK_LLM_MODEL``
and, if it needs one, ``NOTEBOOK_LLM_API_KEY``.

The answer must be a script of the same shape as the extractive writer's;
anything else fails the attempt with a message saying what was wrong
(retryable: a model may answer better the next time)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import BaseModel, Field, ValidationError

# The content a model gets: enough for an episode, small enough for any
# context window.
MAX_PROMPT_CHARS = 12_000


class ModelUnusable(Exception):
    """The model's server refused, or answered something that is not a script."""


@dataclass(frozen=True)
class ModelEndpoint:
    url: str
    model: str
    api_key: str | None

    @staticmethod
    def from_env() -> ModelEndpoint | None:
        url = os.environ.get("NOTEBOOK_LLM_URL")
        if not url:
            return None
        return ModelEndpoint(
            url.rstrip("/"),
            os.environ.get("NOTEBOOK_LLM_MODEL", "gpt-4o-mini"),
            os.environ.get("NOTEBOOK_LLM_API_KEY") or None,
        )


class _Line(BaseModel):
    speaker: str
    text: str = Field(min_length=1, max_length=2000)


class _Part(BaseModel):
    title: str = Field(min_length=1, max_length=200)
    lines: int = Field(ge=0)


class _Script(BaseModel):
    outline: list[_Part] = Field(min_length=1)
    dialogue: list[_Line] = Field(min_length=1)


def _prompt(episode_name: str, briefing: str, names: list[str], max_lines: int) -> str:
    return (
        f"Write a podcast episode called {episode_name!r} as a dialogue between "
        f"{names[0]} and {names[1]}, about the content the user gives. "
        f"{briefing} "
        f"Answer with JSON only, of this shape: "
        '{"outline": [{"title": "...", "lines": N}], '
        '"dialogue": [{"speaker": "' + names[0] + '", "text": "..."}]}. '
        f"At most {max_lines} lines; each speaker is {names[0]} or {names[1]}; "
        "plain sentences that read well aloud, no stage directions."
    )


def write_script_with_model(
    endpoint: ModelEndpoint,
    content: str,
    episode_name: str,
    briefing: str,
    speakers: list[dict[str, Any]],
    max_lines: int,
) -> dict[str, Any]:
    names = [speakers[0]["name"], speakers[1]["name"]]
    headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}
    request = {
        "model": endpoint.model,
        "messages": [
            {"role": "system", "content": _prompt(episode_name, briefing, names, max_lines)},
            {"role": "user", "content": content[:MAX_PROMPT_CHARS]},
        ],
        "response_format": {"type": "json_object"},
    }
    try:
        answer = httpx.post(
            f"{endpoint.url}/chat/completions", json=request, headers=headers, timeout=300
        )
    except httpx.HTTPError as err:
        raise ModelUnusable(f"the model's server at {endpoint.url} is unreachable: {err}") from None
    if answer.status_code != 200:
        raise ModelUnusable(
            f"the model's server answered {answer.status_code}: {answer.text[:300]}"
        )
    try:
        text = answer.json()["choices"][0]["message"]["content"]
        script = _Script.model_validate(json.loads(text))
    except (ValueError, KeyError, IndexError, TypeError, ValidationError) as err:
        raise ModelUnusable(f"the model's answer is not a script: {err}"[:500]) from None
    lines = script.dialogue[:max_lines]
    strangers = {line.speaker for line in lines} - set(names)
    if strangers:
        raise ModelUnusable(
            f"the model's script has speakers {sorted(strangers)} besides {names[0]} and {names[1]}"
        )
    return {
        "briefing": briefing,
        "written_by": endpoint.model,
        "outline": [part.model_dump() for part in script.outline],
        "dialogue": [line.model_dump() for line in lines],
    }
