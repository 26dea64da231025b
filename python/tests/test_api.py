"""The Python API against `amanuensis transcribe` on jfk, its faster-whisper shapes, and its
errors."""

import threading
import time

import numpy
import pytest

import amanuensis
from conftest import JFK, cli_json


def test_transcribe_a_path_as_the_command_does(tiny):
    segments, info = tiny.transcribe(JFK, beam_size=1)
    assert info.language == "en" and info.language_probability == 1.0
    assert info.duration is None  # known once the segments are read
    segments = list(segments)
    expected = cli_json(tiny.path, JFK)
    assert [s.text for s in segments] == [s["text"] for s in expected["segments"]]
    for got, want in zip(segments, expected["segments"]):
        assert (got.id, got.seek, got.start, got.end) == (want["id"], want["seek"], want["start"], want["end"])
        assert got.tokens == want["tokens"]
        assert got.avg_logprob == pytest.approx(want["avg_logprob"], abs=1e-12)
        assert got.words is None
    assert info.duration == 11.0
    assert tiny.backend == "cpu" and not tiny.is_multilingual


def test_beam_search_and_word_timestamps_as_the_command(tiny):
    segments, _ = tiny.transcribe(str(JFK), beam_size=5, word_timestamps=True)
    segments = list(segments)
    expected = cli_json(tiny.path, JFK, "--beam-size", "5", "--word-timestamps")
    assert "".join(s.text for s in segments) == "".join(s["text"] for s in expected["segments"])
    words = [w for s in segments for w in s.words]
    cli_words = [w for s in expected["segments"] for w in s["words"]]
    assert [(w.word, w.start, w.end) for w in words] == [
        (w["word"], w["start"], w["end"]) for w in cli_words
    ]
    assert all(isinstance(w, amanuensis.Word) for w in words)


def test_an_array_gives_the_files_transcript(tiny):
    audio = amanuensis.decode_audio(JFK)
    assert audio.dtype == numpy.float32 and audio.ndim == 1 and len(audio) == 176000
    from_array = [s.text for s in tiny.transcribe(audio, beam_size=1)[0]]
    from_file = [s.text for s in tiny.transcribe(JFK, beam_size=1)[0]]
    assert from_array == from_file


def test_faster_whispers_names_work(tiny):
    model = amanuensis.WhisperModel("tiny.en", device="cpu", compute_type="int8", cpu_threads=2)
    segments, info = model.transcribe(str(JFK), beam_size=1, vad_filter=True)
    text = "".join(s.text for s in segments)
    assert "ask not what your country can do for you" in text
    assert info.vad_options is not None and info.duration_after_vad is not None
    assert info.duration_after_vad <= info.duration
    batched = amanuensis.BatchedInferencePipeline(model)
    segments, _ = batched.transcribe(str(JFK), batch_size=4)
    assert "ask not what your country can do for you" in "".join(s.text for s in segments)
    with pytest.raises(ValueError, match="not CUDA"):
        amanuensis.WhisperModel("tiny.en", device="cuda")


def test_the_gil_is_released_while_transcribing(tiny):
    """A Python thread keeps running while the transcription decodes."""
    counted = []
    stop = threading.Event()

    def count():
        n = 0
        while not stop.is_set():
            n += 1
        counted.append(n)

    t = threading.Thread(target=count)
    start = time.perf_counter()
    t.start()
    list(tiny.transcribe(JFK, beam_size=1)[0])
    elapsed = time.perf_counter() - start
    stop.set()
    t.join()
    # Python's interpreter loop runs millions of increments a second; held by the
    # transcription, the GIL would leave this thread its switch interval's share only.
    assert counted[0] > 100_000 * elapsed, (counted, elapsed)


def test_bad_input_raises_clearly(tiny, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.flac"):
        tiny.transcribe(tmp_path / "missing.flac")
    notes = tmp_path / "notes.txt"
    notes.write_text("not audio at all " * 100)
    with pytest.raises(amanuensis.AudioDecodeError, match="notes.txt"):
        tiny.transcribe(notes)
    with pytest.raises(TypeError, match="float32"):
        tiny.transcribe(numpy.zeros(16000, dtype=numpy.float64))
    with pytest.raises(ValueError, match="1-D"):
        tiny.transcribe(numpy.zeros((16000, 2), dtype=numpy.float32))
    with pytest.raises(ValueError, match="16000 Hz"):
        tiny.transcribe(numpy.zeros(44100, dtype=numpy.float32), sampling_rate=44100)
    bad = numpy.zeros(16000, dtype=numpy.float32)
    bad[8000] = numpy.nan
    with pytest.raises(amanuensis.AudioDecodeError, match="NaN"):
        tiny.transcribe(bad)
    with pytest.raises(amanuensis.AudioDecodeError, match="no audio samples"):
        tiny.transcribe(numpy.zeros(0, dtype=numpy.float32))
    with pytest.raises(amanuensis.OptionsError, match="English-only"):
        tiny.transcribe(JFK, language="fr")
    with pytest.raises(TypeError, match="path or a 1-D float32"):
        tiny.transcribe(42)
    with pytest.raises(amanuensis.ModelError):
        amanuensis.Model("/nonexistent/model/dir")
    with pytest.raises(ValueError, match="backend"):
        amanuensis.Model("tiny.en", backend="gpu")
    # Still usable after all that.
    assert "country" in "".join(s.text for s in tiny.transcribe(JFK, beam_size=1)[0])


def _alive(native_id):
    import os

    return os.path.exists(f"/proc/self/task/{native_id}")


def test_a_run_dropped_early_stops_its_transcription(tiny):
    """316 s of speech, one segment read, the rest dropped: its thread ends at the next
    window (faster-whisper's generator would stop too), not after the whole file. The thread
    is followed by its own id (a count of threads by name would also see earlier runs' threads
    ending and the worker threads they started, which take their creator's name)."""
    import gc

    from conftest import REPO

    segments, _ = tiny.transcribe(REPO / "tests/data/transcribe/long.flac", beam_size=1)
    next(iter(segments))
    native_id = segments.gi_frame.f_locals["run"].native_id
    assert native_id is not None and _alive(native_id)
    del segments
    gc.collect()
    start = time.perf_counter()
    while _alive(native_id):
        assert time.perf_counter() - start < 10, "the transcription went on after its run was dropped"
        time.sleep(0.05)
