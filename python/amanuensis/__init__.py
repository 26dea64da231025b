"""Whisper transcription with amanuensis, shaped like faster-whisper's API.

    from amanuensis import WhisperModel     # was: from faster_whisper import WhisperModel

    model = WhisperModel("base")
    segments, info = model.transcribe("talk.flac", beam_size=5)
    print(info.language, info.language_probability)
    for segment in segments:
        print(f"[{segment.start:.2f}s -> {segment.end:.2f}s] {segment.text}")

`Model` is the same class under this project's own name, with its own arguments
(`Model("base", backend="auto", threads=None)`). Segments come as they are decoded; the
encoder and the decoder run with the GIL released.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

from ._amanuensis import (
    AmanuensisError,
    decode_audio as _decode_audio,
    AudioDecodeError,
    ModelError,
    OptionsError,
)
from ._amanuensis import Model as _Core

__all__ = [
    "AmanuensisError",
    "AudioDecodeError",
    "BatchedInferencePipeline",
    "Model",
    "ModelError",
    "OptionsError",
    "Segment",
    "TranscriptionInfo",
    "VadOptions",
    "WhisperModel",
    "Word",
    "decode_audio",
]

SAMPLE_RATE = 16000


def decode_audio(input_file: Union[str, "os.PathLike[str]"], sampling_rate: int = SAMPLE_RATE) -> Any:
    """The audio of `input_file` (wav, flac, mp3, ogg, m4a, ...) as a 1-D float32 numpy
    array of mono samples at 16 kHz, as faster-whisper's `decode_audio` (which resamples to
    any rate; this one to Whisper's only)."""
    if sampling_rate != SAMPLE_RATE:
        raise ValueError(f"sampling_rate {sampling_rate}: amanuensis decodes to {SAMPLE_RATE} Hz only")
    return _decode_audio(os.fspath(input_file))

# openai-whisper's and faster-whisper's defaults.
PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"
TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


@dataclass
class Word:
    start: float
    end: float
    word: str
    probability: float


@dataclass
class Segment:
    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: List[int]
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    words: Optional[List[Word]]
    temperature: Optional[float]


@dataclass
class VadOptions:
    """Silero VAD's options, as faster-whisper's `VadOptions`."""

    threshold: float = 0.5
    neg_threshold: Optional[float] = None
    min_speech_duration_ms: int = 0
    max_speech_duration_s: float = float("inf")
    min_silence_duration_ms: int = 2000
    speech_pad_ms: int = 400


@dataclass
class TranscriptionInfo:
    """What is known of a transcription when it starts; `duration`, `duration_after_vad` and
    `all_language_probs` are filled in once its segments have all been read."""

    language: str
    language_probability: float
    duration: Optional[float]
    duration_after_vad: Optional[float]
    all_language_probs: Optional[List[Tuple[str, float]]]
    transcription_options: dict = field(default_factory=dict)
    vad_options: Optional[VadOptions] = None


def _segments(run: Any, info: TranscriptionInfo) -> Iterator[Segment]:
    for s in run:
        words = s.pop("words")
        if words is not None:
            words = [Word(**w) for w in words]
        yield Segment(words=words, **s)
    result = run.result()
    info.duration = result["duration"]
    after_vad = result["duration_after_vad"]
    info.duration_after_vad = result["duration"] if after_vad is None else after_vad
    probs = result["all_language_probs"]
    info.all_language_probs = [tuple(p) for p in probs] if probs is not None else None


def _vad_parameters(vad_parameters: Union[None, dict, VadOptions]) -> Optional[dict]:
    if vad_parameters is None:
        return None
    if isinstance(vad_parameters, VadOptions):
        vad_parameters = dict(vad_parameters.__dict__)
    if vad_parameters.get("neg_threshold") is None:
        vad_parameters.pop("neg_threshold", None)
    return vad_parameters


def _clips(clip_timestamps: Union[str, Sequence[float], None]) -> Optional[List[float]]:
    if clip_timestamps is None or clip_timestamps == "0" or clip_timestamps == []:
        return None
    if isinstance(clip_timestamps, str):
        return [float(t) for t in clip_timestamps.split(",") if t.strip()]
    return [float(t) for t in clip_timestamps]


_DEVICES = {"auto": "auto", "cpu": "cpu", "npu": "npu", "emu": "emu", "tract": "tract"}


class Model:
    """A Whisper model: a catalog name (`tiny.en`, `base`, `large-v3`, ..., fetched on first
    use into amanuensis's model cache) or a model directory, its encoder on `backend`
    (`auto`: the NPU when there is one, else the CPU; `cpu`, `npu`, `emu`, `tract`)."""

    def __init__(
        self,
        name_or_path: Union[str, "os.PathLike[str]"],
        backend: str = "auto",
        threads: Optional[int] = None,
    ) -> None:
        self._core = _Core(os.fspath(name_or_path), backend, threads)

    @property
    def backend(self) -> str:
        """The backend the encoder runs on (what `auto` chose)."""
        return self._core.backend

    @property
    def path(self) -> str:
        """The model's directory."""
        return self._core.path

    @property
    def is_multilingual(self) -> bool:
        return self._core.is_multilingual

    def transcribe(
        self,
        audio: Union[str, "os.PathLike[str]", Any],
        language: Optional[str] = None,
        task: str = "transcribe",
        beam_size: Optional[int] = None,
        best_of: Optional[int] = None,
        patience: Optional[float] = 1.0,
        length_penalty: Optional[float] = None,
        temperature: Union[float, Sequence[float]] = TEMPERATURES,
        compression_ratio_threshold: Optional[float] = 2.4,
        log_prob_threshold: Optional[float] = -1.0,
        no_speech_threshold: Optional[float] = 0.6,
        condition_on_previous_text: bool = True,
        initial_prompt: Optional[str] = None,
        word_timestamps: bool = False,
        prepend_punctuations: str = PREPEND_PUNCTUATIONS,
        append_punctuations: str = APPEND_PUNCTUATIONS,
        vad_filter: bool = False,
        vad_parameters: Union[None, dict, VadOptions] = None,
        clip_timestamps: Union[str, Sequence[float], None] = "0",
        hallucination_silence_threshold: Optional[float] = None,
        without_timestamps: bool = False,
        batch_size: Optional[int] = None,
        vad: Optional[bool] = None,
        seed: int = 0,
        sampling_rate: int = SAMPLE_RATE,
    ) -> Tuple[Iterable[Segment], TranscriptionInfo]:
        """Transcribes `audio`: a path, or a 1-D float32 numpy array of mono 16 kHz samples.

        Returns `(segments, info)`: the segments come lazily, as they are decoded. The
        arguments are faster-whisper's (`vad` is `vad_filter` by this project's name;
        `batch_size` runs faster-whisper's batched pipeline, VAD included). `beam_size` and
        `best_of` default to faster-whisper's 5, except with `batch_size`, whose decoding is
        greedy (one sequence a window, which takes neither). An audio file that
        cannot be read raises at once (`FileNotFoundError`, `AudioDecodeError`); options that
        do not fit the model raise `OptionsError`. An array must be 16 kHz: say its
        `sampling_rate` if it is not, and this raises rather than mishear it.
        """
        if sampling_rate != SAMPLE_RATE and not isinstance(audio, (str, os.PathLike)):
            raise ValueError(
                f"the samples are at {sampling_rate} Hz; Whisper takes {SAMPLE_RATE} Hz: "
                "resample them, or pass the file (any rate is resampled when read)"
            )
        if isinstance(temperature, (int, float)):
            temperature = [float(temperature)]
        if beam_size is None:
            beam_size = 1 if batch_size else 5
        if best_of is None:
            best_of = 1 if batch_size else 5
        options = {
            "language": language,
            "task": task,
            "beam_size": beam_size if beam_size and beam_size > 1 else None,
            "best_of": best_of if best_of > 1 else None,
            "patience": patience if beam_size and beam_size > 1 else None,
            "length_penalty": length_penalty,
            "temperature": list(temperature),
            "compression_ratio_threshold": compression_ratio_threshold,
            "log_prob_threshold": log_prob_threshold,
            "no_speech_threshold": no_speech_threshold,
            "condition_on_previous_text": condition_on_previous_text,
            "initial_prompt": initial_prompt,
            "word_timestamps": word_timestamps,
            "prepend_punctuations": prepend_punctuations,
            "append_punctuations": append_punctuations,
            "vad_filter": bool(vad_filter or vad),
            "vad_parameters": _vad_parameters(vad_parameters),
            "clip_timestamps": _clips(clip_timestamps),
            "hallucination_silence_threshold": hallucination_silence_threshold,
            "without_timestamps": without_timestamps,
            "batch_size": batch_size,
            "seed": seed,
        }
        if isinstance(audio, os.PathLike):
            audio = os.fspath(audio)
        run = self._core.transcribe(audio, options)
        vad_options = None
        if options["vad_parameters"] is not None and (options["vad_filter"] or batch_size):
            vad_options = VadOptions(**options["vad_parameters"])
        elif batch_size:
            # The batched pipeline's own (faster-whisper's): speech ends at 160 ms pauses.
            vad_options = VadOptions(min_silence_duration_ms=160, max_speech_duration_s=30.0)
        elif options["vad_filter"]:
            vad_options = VadOptions()
        if vad_options is not None and batch_size:
            vad_options.max_speech_duration_s = 30.0
        info = TranscriptionInfo(
            language=run.language,
            language_probability=run.language_probability,
            duration=None,
            duration_after_vad=None,
            all_language_probs=None,
            transcription_options=options,
            vad_options=vad_options,
        )
        return _segments(run, info), info


class WhisperModel(Model):
    """faster-whisper's `WhisperModel(model_size_or_path, device, compute_type, cpu_threads,
    ...)`: `device` names the encoder's backend (`auto`, `cpu`; `npu` for an AMD NPU; `cuda`
    is not one), `cpu_threads` its threads (0: all cores). `compute_type`, `num_workers`,
    `download_root` and `local_files_only` are taken for compatibility and not used: the
    encoder's precision is the backend's, and models go to amanuensis's cache."""

    def __init__(
        self,
        model_size_or_path: Union[str, "os.PathLike[str]"],
        device: str = "auto",
        device_index: Union[int, List[int]] = 0,
        compute_type: str = "default",
        cpu_threads: int = 0,
        num_workers: int = 1,
        download_root: Optional[str] = None,
        local_files_only: bool = False,
        **_: Any,
    ) -> None:
        if device not in _DEVICES:
            raise ValueError(
                f"device {device!r} is not one of {', '.join(_DEVICES)} "
                "(amanuensis runs on the CPU or an AMD NPU, not CUDA)"
            )
        super().__init__(model_size_or_path, _DEVICES[device], cpu_threads or None)


class BatchedInferencePipeline:
    """faster-whisper's batched pipeline over a model: `transcribe(audio, batch_size=8)`
    decodes the speech VAD finds, in windows of up to 30 s, `batch_size` at a time."""

    def __init__(self, model: Model) -> None:
        self.model = model

    def transcribe(
        self, audio: Any, batch_size: int = 8, **kwargs: Any
    ) -> Tuple[Iterable[Segment], TranscriptionInfo]:
        kwargs.setdefault("condition_on_previous_text", False)
        # faster-whisper's batched pipeline's default: text only.
        kwargs.setdefault("without_timestamps", True)
        return self.model.transcribe(audio, batch_size=batch_size, **kwargs)
