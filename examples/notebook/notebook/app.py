"""The notebook's web app: a JSON API in Open Notebook's shapes under
``/api`` and server-drawn pages (htmx for the live parts) elsewhere.

Run it with ``uvicorn notebook.app:app``; ``ERRAND_URL`` names the errand
server, ``NOTEBOOK_DATA`` the folder for its files and SQLite database."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import errand
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ValidationError

from . import jobs, settings
from .db import Database
from .service import (
    EpisodeProfileRequest,
    GenerateRequest,
    Notebook,
    NotebookError,
    SpeakerProfileRequest,
)

log = logging.getLogger("notebook")
# A file field of a multipart form, and an optional text field beside it.
Upload = Annotated[UploadFile | None, File()]
FormText = Annotated[str | None, Form()]
HERE = Path(__file__).parent
Model = TypeVar("Model", bound=BaseModel)
templates = Jinja2Templates(directory=HERE / "templates")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    config = settings.load()
    db = Database(config.database)
    db.init()
    async with errand.AsyncClient(config.errand_url, config.errand_token) as client:
        app.state.notebook = Notebook(config, db, client)
        yield


app = FastAPI(title="errand notebook", lifespan=lifespan)
app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")


# Room for a multipart form's other fields around the file.
FORM_OVERHEAD_BYTES = 1024 * 1024


@app.middleware("http")
async def refuse_oversized_uploads(request: Request, call_next: Any) -> Response:
    """An upload whose announced size is past the limit is refused before
    its body is read (the form parser would otherwise spool all of it)."""
    announced = request.headers.get("content-length", "")
    if request.method == "POST" and announced.isdigit():
        limit = settings.load().max_upload_bytes
        if int(announced) > limit + FORM_OVERHEAD_BYTES:
            return error_response(
                request,
                413,
                "upload_too_large",
                f"the upload is larger than the limit of {limit // (1024 * 1024)} MB",
            )
    return await call_next(request)


def notebook(request: Request) -> Notebook:
    return request.app.state.notebook


def wants_html(request: Request) -> bool:
    return request.headers.get("HX-Request") == "true" or not request.url.path.startswith("/api/")


def error_response(request: Request, status: int, code: str, message: str) -> Response:
    """A 4xx as JSON for the API, as a fragment in the page's message area
    for a form the page sent, as a page for a link followed."""
    if request.headers.get("HX-Request") == "true":
        return templates.TemplateResponse(
            request,
            "_flash.html",
            {"kind": "error", "message": message},
            status_code=status,
            headers={"HX-Retarget": "#flash", "HX-Reswap": "innerHTML"},
        )
    if wants_html(request):
        return templates.TemplateResponse(
            request, "error.html", {"status": status, "message": message}, status_code=status
        )
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


@app.exception_handler(NotebookError)
async def on_notebook_error(request: Request, err: NotebookError) -> Response:
    return error_response(request, err.status, err.code, err.message)


@app.exception_handler(RequestValidationError)
async def on_invalid_request(request: Request, err: RequestValidationError) -> Response:
    problems = []
    for problem in err.errors():
        where = ".".join(str(p) for p in problem.get("loc", ()) if p not in ("body", "query"))
        text = str(problem.get("msg", "invalid")).removeprefix("Value error, ")
        problems.append(f"{where}: {text}" if where else text)
    return error_response(request, 422, "invalid_request", "; ".join(problems))


@app.exception_handler(errand.ErrandError)
async def on_errand_error(request: Request, err: errand.ErrandError) -> Response:
    status = err.status if err.status and 400 <= err.status < 500 else 502
    return error_response(request, status, err.code, f"errand: {err.message}")


@app.exception_handler(errand.ServerUnreachable)
async def on_errand_down(request: Request, err: errand.ServerUnreachable) -> Response:
    return error_response(request, 503, "errand_unreachable", f"errand is not reachable: {err}")


@app.exception_handler(Exception)
async def on_bug(request: Request, err: Exception) -> Response:
    # A bug of the app's: logged with its trace, answered without it.
    log.exception("%s %s failed", request.method, request.url.path)
    return error_response(request, 500, "internal", f"the notebook failed: {type(err).__name__}")


# The JSON API


@app.post("/api/sources", status_code=202)
async def api_add_source(
    request: Request, file: Upload = None, title: FormText = None
) -> dict[str, str]:
    return await notebook(request).add_source(file, title)


@app.get("/api/sources")
async def api_sources(request: Request) -> dict[str, Any]:
    return {"sources": await notebook(request).sources()}


@app.get("/api/sources/{source_id}")
async def api_source(request: Request, source_id: str) -> dict[str, Any]:
    return notebook(request).source(source_id)


@app.get("/api/speaker-profiles")
async def api_speaker_profiles(request: Request) -> dict[str, Any]:
    return {"speaker_profiles": notebook(request).db.speaker_profiles()}


@app.post("/api/speaker-profiles", status_code=201)
async def api_put_speaker_profile(request: Request, body: SpeakerProfileRequest) -> dict[str, Any]:
    return notebook(request).put_speaker_profile(body)


@app.get("/api/episode-profiles")
async def api_episode_profiles(request: Request) -> dict[str, Any]:
    return {"episode_profiles": notebook(request).db.episode_profiles()}


@app.post("/api/episode-profiles", status_code=201)
async def api_put_episode_profile(request: Request, body: EpisodeProfileRequest) -> dict[str, Any]:
    return notebook(request).put_episode_profile(body)


@app.post("/api/podcasts/generate", status_code=202)
async def api_generate(request: Request, body: GenerateRequest) -> dict[str, str]:
    return await notebook(request).generate(body)


@app.get("/api/podcasts/episodes")
async def api_episodes(request: Request) -> dict[str, Any]:
    return {"episodes": await notebook(request).episodes()}


@app.get("/api/podcasts/episodes/{episode_id}")
async def api_episode(request: Request, episode_id: str) -> dict[str, Any]:
    return await notebook(request).episode(episode_id)


@app.get("/api/podcasts/episodes/{episode_id}/audio")
async def api_episode_audio(request: Request, episode_id: str, download: bool = False) -> Response:
    path = notebook(request).episode_audio(episode_id)
    name = f"episode-{episode_id}.wav"
    return FileResponse(
        path,
        media_type="audio/wav",
        filename=name,
        content_disposition_type="attachment" if download else "inline",
    )


@app.get("/api/podcasts/episodes/{episode_id}/events")
async def api_episode_events(request: Request, episode_id: str) -> dict[str, Any]:
    return {"events": await notebook(request).episode_events(episode_id)}


@app.post("/api/podcasts/episodes/{episode_id}/cancel")
async def api_cancel_episode(request: Request, episode_id: str) -> dict[str, Any]:
    return await notebook(request).cancel_episode(episode_id)


@app.post("/api/podcasts/episodes/{episode_id}/retry")
async def api_retry_episode(request: Request, episode_id: str) -> dict[str, Any]:
    return await notebook(request).retry_episode(episode_id)


@app.post("/api/transcriptions", status_code=202)
async def api_add_transcription(request: Request, file: Upload = None) -> dict[str, str]:
    return await notebook(request).add_transcription(file)


@app.get("/api/transcriptions/{transcription_id}")
async def api_transcription(request: Request, transcription_id: str) -> dict[str, Any]:
    return await notebook(request).transcription(transcription_id)


@app.post("/api/transcriptions/{transcription_id}/cancel")
async def api_cancel_transcription(request: Request, transcription_id: str) -> dict[str, Any]:
    return await notebook(request).cancel_transcription(transcription_id)


# Pages


def page(request: Request, name: str, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, context)


@app.get("/", response_class=HTMLResponse)
async def sources_page(request: Request) -> HTMLResponse:
    return page(request, "sources.html", sources=await notebook(request).sources())


@app.get("/fragments/sources", response_class=HTMLResponse)
async def sources_fragment(request: Request) -> HTMLResponse:
    return page(request, "_sources.html", sources=await notebook(request).sources())


@app.post("/ui/sources", response_class=HTMLResponse)
async def ui_add_source(
    request: Request, file: Upload = None, title: FormText = None
) -> HTMLResponse:
    added = await notebook(request).add_source(file, title)
    return page(
        request,
        "_sources.html",
        sources=await notebook(request).sources(),
        flash=f"Processing {file.filename if file else ''} (job {added['job_id']})",
    )


@app.get("/podcasts", response_class=HTMLResponse)
async def podcasts_page(request: Request) -> HTMLResponse:
    nb = notebook(request)
    return page(
        request,
        "podcasts.html",
        episodes=await nb.episodes(),
        episode_profiles=nb.db.episode_profiles(),
        speaker_profiles=nb.db.speaker_profiles(),
        sources=[s for s in nb.db.sources() if s["ready"]],
    )


@app.get("/fragments/episodes", response_class=HTMLResponse)
async def episodes_fragment(request: Request) -> HTMLResponse:
    return page(request, "_episodes.html", episodes=await notebook(request).episodes())


@app.post("/ui/podcasts/generate", response_class=HTMLResponse)
async def ui_generate(
    request: Request,
    episode_profile: str = Form(""),
    speaker_profile: str = Form(""),
    episode_name: str = Form(""),
    content: str = Form(""),
    source_id: str = Form(""),
    briefing_suffix: str = Form(""),
) -> HTMLResponse:
    body = from_form(
        GenerateRequest,
        episode_profile=episode_profile,
        speaker_profile=speaker_profile or None,
        episode_name=episode_name,
        content=content or None,
        source_id=source_id or None,
        briefing_suffix=briefing_suffix or None,
    )
    submitted = await notebook(request).generate(body)
    return page(
        request,
        "_episodes.html",
        episodes=await notebook(request).episodes(),
        flash=f"Generating {body.episode_name!r} (job {submitted['job_id']})",
    )


@app.post("/ui/episodes/{episode_id}/{action}", response_class=HTMLResponse)
async def ui_episode_action(request: Request, episode_id: str, action: str) -> HTMLResponse:
    nb = notebook(request)
    if action == "cancel":
        await nb.cancel_episode(episode_id)
    elif action == "retry":
        await nb.retry_episode(episode_id)
    else:
        raise NotebookError(404, "unknown_action", f"no action {action!r} on an episode")
    return page(request, "_episodes.html", episodes=await nb.episodes())


@app.get("/podcasts/episodes/{episode_id}", response_class=HTMLResponse)
async def episode_page(request: Request, episode_id: str) -> HTMLResponse:
    nb = notebook(request)
    episode = await nb.episode(episode_id)
    events = await nb.episode_events(episode_id) if episode["job_id"] else []
    return page(request, "episode.html", episode=episode, events=events)


def from_form(model: type[Model], **fields: Any) -> Model:
    """A request model from a form's fields; a refusal names the fields
    as the JSON API's does."""
    try:
        return model(**fields)
    except ValidationError as err:
        raise RequestValidationError(err.errors()) from None


def profiles_fragment(request: Request, flash: str) -> HTMLResponse:
    nb = notebook(request)
    return page(
        request,
        "_profiles.html",
        episode_profiles=nb.db.episode_profiles(),
        speaker_profiles=nb.db.speaker_profiles(),
        flash=flash,
    )


@app.post("/ui/speaker-profiles", response_class=HTMLResponse)
async def ui_speaker_profile(request: Request) -> HTMLResponse:
    form = await request.form()
    body = from_form(
        SpeakerProfileRequest,
        name=str(form.get("name", "")),
        description=str(form.get("description", "")),
        speakers=[
            {
                "name": str(form.get(f"speaker{i}_name", "")),
                "voice": str(form.get(f"speaker{i}_voice", "")),
                "rate": form.get(f"speaker{i}_rate") or 110,
                "pitch": form.get(f"speaker{i}_pitch") or 50,
            }
            for i in (1, 2)
        ],
    )
    notebook(request).put_speaker_profile(body)
    return profiles_fragment(request, f"Saved speaker profile {body.name}")


@app.post("/ui/episode-profiles", response_class=HTMLResponse)
async def ui_episode_profile(request: Request) -> HTMLResponse:
    form = await request.form()
    body = from_form(
        EpisodeProfileRequest,
        name=str(form.get("name", "")),
        description=str(form.get("description", "")),
        speaker_profile=str(form.get("speaker_profile", "")),
        max_lines=form.get("max_lines") or 20,
        briefing=str(form.get("briefing", "")),
    )
    notebook(request).put_episode_profile(body)
    return profiles_fragment(request, f"Saved episode profile {body.name}")


@app.get("/transcribe", response_class=HTMLResponse)
async def transcribe_page(request: Request) -> HTMLResponse:
    return page(request, "transcribe.html", transcriptions=await notebook(request).transcriptions())


@app.post("/ui/transcriptions", response_class=HTMLResponse)
async def ui_add_transcription(request: Request, file: Upload = None) -> Response:
    added = await notebook(request).add_transcription(file)
    return Response(
        status_code=204, headers={"HX-Redirect": f"/transcriptions/{added['transcription_id']}"}
    )


@app.get("/transcriptions/{transcription_id}", response_class=HTMLResponse)
async def transcription_page(request: Request, transcription_id: str) -> HTMLResponse:
    return page(
        request, "transcription.html", t=await notebook(request).transcription(transcription_id)
    )


@app.post("/ui/transcriptions/{transcription_id}/cancel", response_class=HTMLResponse)
async def ui_cancel_transcription(request: Request, transcription_id: str) -> HTMLResponse:
    t = await notebook(request).cancel_transcription(transcription_id)
    return page(request, "_transcription_progress.html", t=t)


# Live streams for the pages


@app.get("/events/{command}")
async def live_table(request: Request, command: str) -> StreamingResponse:
    """Tells a page's live table when its jobs changed (it then redraws
    itself with one request)."""
    if command not in {"process_source", "generate_podcast", "transcribe"}:
        raise NotebookError(404, "unknown_command", f"no live table for {command!r}")
    return StreamingResponse(
        jobs.changes(notebook(request).client, command),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store"},
    )


@app.get("/transcriptions/{transcription_id}/stream")
async def transcription_stream(request: Request, transcription_id: str) -> Response:
    """Follows the transcription's job over errand's stream of that job:
    a ``progress`` fragment per event, then ``done`` with the transcript
    (or the error), after which the page closes the stream."""
    nb = notebook(request)
    record = nb.transcription_record(transcription_id)

    async def fragments() -> AsyncIterator[str]:
        async for event in nb.client.stream(record["job_id"]):
            if event.event == "end":
                break
            if event.event in {"status", "progress", "failure", "result"}:
                t = await nb.transcription(transcription_id)
                html = templates.get_template("_transcription_progress.html").render(t=t)
                yield jobs.sse_message("progress", html)
        t = await nb.transcription(transcription_id)
        yield jobs.sse_message(
            "progress", templates.get_template("_transcription_progress.html").render(t=t)
        )
        yield jobs.sse_message("done", templates.get_template("_transcript.html").render(t=t))

    return StreamingResponse(
        fragments(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
    )


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


templates.env.filters["pretty"] = pretty
