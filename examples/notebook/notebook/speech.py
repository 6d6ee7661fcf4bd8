"""Speech both ways, offline: espeak-ng (a Debian package) speaks each
line of a dialogue into a WAV file, the lines are joined into one
episode, and pocketsphinx (from PyPI, with its English model) turns
audio back into text. miniaudio decodes WAV, MP3 and FLAC uploads and
resamples them to what the recogniser expects."""

from __future__ import annotations

import io
import shutil
import subprocess
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import miniaudio
from pocketsphinx import Decoder, Segmenter

RECOGNISER_RATE = 16000
AUDIO_TYPES = {".wav", ".mp3", ".flac"}
FEED_BYTES = RECOGNISER_RATE * 2  # one second of 16-bit audio
# A pause between two lines of dialogue, so that they do not run together
# for a listener or for the recogniser's voice activity detection.
LINE_GAP_SECS = 0.4


class SpeechUnavailable(Exception):
    """The synthesiser is not installed: no retry can help."""


class UnreadableAudio(Exception):
    """The upload is not audio this app can decode."""


def speak(text: str, voice: str, rate: int, pitch: int, out: Path) -> None:
    """Speaks ``text`` into the WAV file ``out`` (written whole or not at all)."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise SpeechUnavailable("espeak-ng is not installed (Debian: apt install espeak-ng)")
    partial = out.with_suffix(".partial.wav")
    subprocess.run(
        [espeak, "-v", voice, "-s", str(rate), "-p", str(pitch), "-w", str(partial), "--", text],
        check=True,
        capture_output=True,
        timeout=120,
    )
    partial.replace(out)


def join_wavs(parts: list[Path], out: Path, gap_secs: float = LINE_GAP_SECS) -> float:
    """One WAV file of ``parts`` in order with a silence between each two;
    answers its length in seconds. The parts share espeak-ng's format."""
    partial = out.with_suffix(".partial.wav")
    frames = 0
    with wave.open(str(partial), "wb") as joined:
        for i, part in enumerate(parts):
            with wave.open(str(part), "rb") as piece:
                if i == 0:
                    joined.setparams(piece.getparams())
                    silence = b"\0" * (int(piece.getframerate() * gap_secs) * piece.getsampwidth())
                elif piece.getframerate() != joined.getframerate():
                    raise ValueError(f"{part.name} has another sample rate than the first line")
                else:
                    joined.writeframes(silence)
                    frames += len(silence) // piece.getsampwidth()
                joined.writeframes(piece.readframes(piece.getnframes()))
                frames += piece.getnframes()
        rate = joined.getframerate() if parts else 1
    partial.replace(out)
    return frames / rate


@dataclass
class Heard:
    start: float
    end: float
    text: str


def pcm_for_recogniser(path: Path) -> tuple[bytes, float]:
    """The file's audio as 16 kHz mono 16-bit PCM, and its length in seconds."""
    try:
        decoded = miniaudio.decode_file(
            str(path),
            output_format=miniaudio.SampleFormat.SIGNED16,
            nchannels=1,
            sample_rate=RECOGNISER_RATE,
        )
    except miniaudio.DecodeError as err:
        raise UnreadableAudio(
            f"{path.name}: not a WAV, MP3 or FLAC file this app can decode ({err})"
        ) from None
    pcm = decoded.samples.tobytes()
    if not pcm:
        raise UnreadableAudio(f"{path.name}: the file holds no audio")
    return pcm, len(pcm) / 2 / RECOGNISER_RATE


def recognise(pcm: bytes, cancelled: Callable[[], bool] = lambda: False) -> Iterator[Heard]:
    """What is said in ``pcm``, a stretch of speech at a time (found by
    voice activity detection), so that a caller can report progress and
    stop between two stretches."""
    decoder = Decoder(samprate=RECOGNISER_RATE, loglevel="FATAL")
    for segment in Segmenter(sample_rate=RECOGNISER_RATE).segment(io.BytesIO(pcm)):
        if cancelled():
            return
        # A stretch can last a minute: it is fed a second at a time, so
        # that a cancel stops the recogniser within about a second.
        decoder.start_utt()
        for start in range(0, len(segment.pcm), FEED_BYTES):
            if cancelled():
                decoder.end_utt()
                return
            decoder.process_raw(segment.pcm[start : start + FEED_BYTES])
        decoder.end_utt()
        hypothesis = decoder.hyp()
        text = hypothesis.hypstr.strip() if hypothesis else ""
        if text:
            yield Heard(segment.start_time, segment.end_time, text)
