"""Makes the faster-whisper reference data in tests/data/reference/faster_whisper/.

  python tests/data/reference/make_faster_whisper.py [OUT]    # from the repository root; OUT
                                                              # defaults to faster_whisper/
                                                              # beside this script
  python tests/data/reference/make_faster_whisper.py --help   # --only, --downloads, --models

Needs Python >= 3.11, the `flac` and `metaflac` command-line tools (Debian's flac 1.4.2 made the
data) and, in a virtualenv, the versions the data was made with:

  pip install faster-whisper==1.2.1 ctranslate2==4.8.5 onnxruntime==1.32.0 numpy==2.4.6 \\
      av==18.1.0 tokenizers==0.22.2 onnx==1.23.2

(Python 3.11.7; onnx only reads the VAD model's graph for vad.json's "model" facts). Everything
runs on the CPU in float32. Network access: `pip download` of the pinned wheels (faster-whisper
1.2.1 itself, to check that the VAD model in its wheel is the one installed, and the CTranslate2
checkpoints of tiny.en and base that models/catalog.toml pins, as make.py's ct2_checkpoint gets
them) and one HTTPS download of the pocketsphinx 5.1.1 sdist from PyPI's file host, checked
against its sha256 (`pip download --no-binary :all:` would build the sdist's metadata, which
for pocketsphinx means compiling CMake from source). --downloads DIR keeps these files in DIR
and reuses them; --models DIR takes DIR/tiny.en and DIR/base as ready checkpoints.

Steps (--only, comma-separated; later steps read what earlier ones wrote into OUT):
  audio     pauses.flac: public-domain LibriVox speech from pocketsphinx's test data, cut at
            the word boundaries of pocketsphinx's own alignments (the .json beside each clip
            in the sdist) and joined by RECIPE: digital silence and low-level white noise gaps
            of 0.05 to 4 s, a 0.16 s word alone (min_speech_duration_ms), and 36.9 s of speech
            with gaps of 0.05-0.25 s only (max_speech_duration_s, the 30 s chunks), ending in
            speech (the speech that runs to the end of the audio). 16 kHz mono 16-bit.
  vad       vad.json and vad_probs/STEM.npy: faster_whisper.vad.get_speech_timestamps for
            every file of INPUTS and option set of OPTION_SETS, collect_chunks of some, and the
            Silero VAD model's per-frame speech probabilities (get_vad_model()(padded audio),
            the padding get_speech_timestamps applies), float32, one per 512 samples
  language  detect_language.json: base's language probabilities as WhisperModel.transcribe
            computes them when language is None
  transcribe
            batched.json: BatchedInferencePipeline(model).transcribe(audio, batch_size=8) and
            model.transcribe(audio, vad_filter=True), tiny.en and base, on news_en and pauses

Inputs are read losslessly: every .flac through `flac -d` as 16-bit integers / 32768 (float32),
what faster_whisper.decode_audio gives for a 16 kHz mono 16-bit file, without a resampler. jfk
is the exception: audio/jfk.flac is 44.1 kHz stereo 24-bit, so its 16 kHz samples are
inputs/jfk.wav.npy (whisper.load_audio, ffmpeg's resampler; see README.md), which the tests
already use. The JSON files are json.dumps(..., indent=1) without a final newline; float('inf')
is written as null (VadOptions.max_speech_duration_s), as is None.
"""

import argparse
import dataclasses
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import urllib.request
import wave
import zipfile
from pathlib import Path

import numpy as np

import faster_whisper
from faster_whisper import BatchedInferencePipeline, WhisperModel
from faster_whisper import vad as fw_vad
from faster_whisper.vad import VadOptions, collect_chunks, get_speech_timestamps, get_vad_model

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
RATE = 16000

FW_VERSION = "1.2.1"
FW_WHEEL = ("https://files.pythonhosted.org/packages/05/99/"
            "49ee85903dee060d9f08297b4a342e5e0bcfca2f027a07b4ee0a38ab13f9/"
            "faster_whisper-1.2.1-py3-none-any.whl")
FW_WHEEL_SHA256 = "79a66ad50688c0b794dd501dc340a736992a6342f7f95e5811be60b5224a26a7"
VAD_MEMBER = "faster_whisper/assets/silero_vad_v6.onnx"
VAD_SHA256 = "4cbf549b8326f60f80f2536d9eefeb450a9abe83365a098031c89719f1be17d2"

SDIST = ("https://files.pythonhosted.org/packages/61/e7/"
         "13e0e787ff467218de880310d79cba14424f13b87171ac44af0bde1e428c/pocketsphinx-5.1.1.tar.gz")
SDIST_SHA256 = "675778b309a22dfc9b7d37f7621976bba491d2a5f8c59696bd77fd6d07271355"
CLIP_DIR = "pocketsphinx-5.1.1/test/data/librivox/"
CLIP = "sense_and_sensibility_01_austen_64kb-{}.wav"  # 16 kHz mono 16-bit
# sha256 of each clip in the sdist
CLIPS = {
    "0870": "b0557cf95c974d930577e58e46b7f068c432a6e3afcc286563d88922b2a5315c",
    "0880": "fbec491ef00ee734a67f0ee318e98c51c157b479e1629ff4f4426861ecac0414",
    "0890": "5793ffbdee55fb8bfd284943a6866864c832d9d4accf2661cabd39915c84ee10",
    "0920": "40882414ef4cc51f3ff7a63bad0c8c87e7f595ffeb8209fbf756c8ebc5c28a59",
    "0930": "954adbf0b56ac8a148cbe77b39ca18d76b5f2a1e1f405565bd786ce3e68a68b7",
}
NOISE_SEED = 20250625
NOISE_RMS = 0.003  # about -50 dBFS, before rounding to 16 bits
# ("speech", clip, start s, end s, words) or (gap kind, seconds); times on the 10 ms grid of
# pocketsphinx's word alignments, at word boundaries
RECIPE = [
    ("speech", "0870", 0.20, 2.23, "and mister john dashwood had then"),
    ("silence", 0.05),
    ("speech", "0870", 2.23, 3.97, "leisure to consider how"),
    ("noise", 0.3),
    ("speech", "0870", 3.97, 5.46, "much there might be prudently"),
    ("silence", 0.8),
    ("speech", "0880", 0.18, 1.10, "he was not"),
    ("noise", 1.5),
    ("speech", "0880", 1.10, 2.80, "an ill disposed young man"),
    ("silence", 2.5),
    ("speech", "0890", 0.70, 0.86, "be"),  # alone: 4 frames of speech
    ("noise", 2.5),
    ("speech", "0890", 0.24, 3.61, "unless to be rather cold hearted and rather selfish"),
    ("silence", 4.0),
    # 36.9 s of speech with short gaps
    ("speech", "0920", 0.20, 5.86, "had he married a more amiable woman he might have been "
     "made still more respectable than he was"),
    ("silence", 0.05),
    ("speech", "0930", 0.19, 3.05, "he might even have been made amiable himself"),
    ("noise", 0.15),
    ("speech", "0870", 0.18, 6.81, "and mister john dashwood had then leisure to consider how "
     "much there might be prudently in his power to do for them"),
    ("silence", 0.25),
    ("speech", "0890", 0.24, 5.12, "unless to be rather cold hearted and rather selfish is to "
     "be ill disposed"),
    ("silence", 0.1),
    ("speech", "0880", 0.18, 2.77, "he was not an ill disposed young man"),
    ("noise", 0.05),
    ("speech", "0920", 0.20, 5.86, "had he married a more amiable woman he might have been "
     "made still more respectable than he was"),
    ("silence", 0.15),
    ("speech", "0930", 0.19, 3.05, "he might even have been made amiable himself"),
    ("noise", 0.1),
    ("speech", "0890", 0.24, 5.12, "unless to be rather cold hearted and rather selfish is to "
     "be ill disposed"),
]

# name -> (path in the repository, how it is read)
INPUTS = {
    "pauses": ("tests/data/reference/faster_whisper/pauses.flac", "flac"),
    "jfk": ("tests/data/reference/inputs/jfk.wav.npy", "npy"),
    "news_en": ("tests/data/reference/transcribe/news_en.flac", "flac"),
}
LANGUAGE_INPUTS = {
    "fr": ("tests/data/transcribe/fr.flac", "flac"),
    "jfk": INPUTS["jfk"],
    "news_en": INPUTS["news_en"],
}
OPTION_SETS = {
    "default": {},
    "threshold_0.3": {"threshold": 0.3},
    "threshold_0.7_neg_0.6": {"threshold": 0.7, "neg_threshold": 0.6},
    "min_speech_250ms": {"min_speech_duration_ms": 250},
    "min_silence_500ms_pad_100ms": {"min_silence_duration_ms": 500, "speech_pad_ms": 100},
    "max_speech_10s": {"max_speech_duration_s": 10},
    "max_speech_5s_min_silence_300ms_pad_0": {"max_speech_duration_s": 5,
                                              "min_silence_duration_ms": 300,
                                              "speech_pad_ms": 0},
    "pad_30ms_min_silence_100ms": {"speech_pad_ms": 30, "min_silence_duration_ms": 100},
    # what BatchedInferencePipeline.transcribe uses when vad_parameters is None
    "batched_default": {"max_speech_duration_s": 30, "min_silence_duration_ms": 160},
}
# (option set, collect_chunks max_duration, who uses it)
COLLECTS = [
    ("default", 30, "asked for: the default options, max_duration=30"),
    ("default", float("inf"), "WhisperModel.transcribe(vad_filter=True): collect_chunks("
     "audio, speech_chunks), max_duration left at inf"),
    ("batched_default", 30, "BatchedInferencePipeline.transcribe: its VadOptions and "
     "collect_chunks(audio, clip_timestamps, max_duration=chunk_length=30)"),
]
PAUSES = HERE / "faster_whisper" / "pauses.flac"  # OUT/pauses.flac (set by main)
MODELS = ("tiny.en", "base")
SEGMENT_KEYS = ("id", "seek", "start", "end", "text", "tokens", "avg_logprob",
                "no_speech_prob", "compression_ratio", "temperature")


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def plain(value):
    """JSON-ready: tuples as lists, inf as None (json.dumps would write Infinity)."""
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value == float("inf"):
        return None
    return value


def write_json(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(plain(value), indent=1, ensure_ascii=False, allow_nan=False))


# --- downloads ---------------------------------------------------------------------------

def pip_wheel(requirement, digest, downloads):
    dest = downloads / requirement
    if not list(dest.glob("*.whl")):
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps",
                        "--only-binary=:all:", "-d", str(dest), requirement], check=True)
    (wheel,) = dest.glob("*.whl")
    assert sha256(wheel.read_bytes()) == digest, wheel
    return wheel


def sdist(downloads):
    path = downloads / Path(SDIST).name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(SDIST) as r:
            path.write_bytes(r.read())
    assert sha256(path.read_bytes()) == SDIST_SHA256, path
    return path


def ct2_checkpoint(name, work, downloads):
    """make.py's ct2_checkpoint: the CTranslate2 checkpoint of `name` from the PyPI wheels that
    models/catalog.toml pins (model.bin, its parts joined, config.json, tokenizer.json,
    vocabulary.txt)."""
    catalog = tomllib.loads((ROOT / "models" / "catalog.toml").read_text())
    (entry,) = [m["pypi"] for m in catalog["model"] if m["name"] == name]
    wheels = [zipfile.ZipFile(pip_wheel(p["requirement"], p["sha256"], downloads))
              for p in entry["packages"]]

    def member(path):
        for z in wheels:
            if path in z.namelist():
                return z.read(path)
        raise KeyError(path)

    out = work / name
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.bin").write_bytes(b"".join(member(p) for p in entry["model_bin"]))
    assert sha256((out / "model.bin").read_bytes()) == entry["model_bin_sha256"]
    for path in entry["files"]:
        (out / Path(path).name).write_bytes(member(path))
    return out


# --- audio -------------------------------------------------------------------------------

def flac_format(path):
    out = subprocess.run(["metaflac", "--show-sample-rate", "--show-channels", "--show-bps",
                          "--show-total-samples", str(path)],
                         check=True, capture_output=True, text=True).stdout.split()
    return dict(zip(("rate", "channels", "bits", "samples"), map(int, out)))


def read_flac16(path):
    """The 16-bit samples of a 16 kHz mono 16-bit FLAC, decoded by `flac -d`."""
    f = flac_format(path)
    assert (f["rate"], f["channels"], f["bits"]) == (RATE, 1, 16), (path, f)
    raw = subprocess.run(["flac", "-d", "-c", "-s", "--force-raw-format", "--endian=little",
                          "--sign=signed", str(path)], check=True, capture_output=True).stdout
    x = np.frombuffer(raw, dtype="<i2")
    assert len(x) == f["samples"]
    return x


def load(name, table=INPUTS):
    """(float32 samples, description) of an input, as faster-whisper is given it."""
    rel, how = table[name]
    path = PAUSES if name == "pauses" else ROOT / rel
    if how == "flac":
        f = flac_format(path)
        audio = read_flac16(path).astype(np.float32) / 32768.0
        read = (f"{f['rate']} Hz, {f['channels']} channel, {f['bits']}-bit FLAC decoded by "
                "`flac -d` (no resampling): int16 / 32768 as float32")
    else:
        audio = np.load(path)
        assert audio.dtype == np.float32 and audio.ndim == 1
        assert np.array_equal(np.round(audio * 32768) / 32768, audio)
        read = ("numpy.load: whisper.load_audio(audio/jfk.flac), ffmpeg's resampling of the "
                "44.1 kHz stereo 24-bit FLAC to 16 kHz mono 16-bit, / 32768 as float32")
    return audio, {"path": rel, "read": read, "samples": len(audio),
                   "seconds": len(audio) / RATE,
                   "sha256_float32_le": sha256(audio.astype("<f4").tobytes())}


def make_audio(out, downloads):
    """pauses.flac from RECIPE; returns the recipe as it goes into vad.json."""
    with tarfile.open(sdist(downloads)) as tar:
        clips = {}
        for k, digest in CLIPS.items():
            data = tar.extractfile(CLIP_DIR + CLIP.format(k)).read()
            assert sha256(data) == digest, k
            with wave.open(io.BytesIO(data)) as w:
                assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (RATE, 1, 2)
                clips[k] = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    rng = np.random.default_rng(NOISE_SEED)
    pieces, recipe, at = [], [], 0
    for step in RECIPE:
        if step[0] == "speech":
            _, k, a, b, words = step
            x = clips[k][round(a * RATE):round(b * RATE)]
            entry = {"kind": "speech", "clip": CLIP_DIR + CLIP.format(k),
                     "clip_start": round(a * RATE), "clip_end": round(b * RATE),
                     "words": words}
        else:
            kind, seconds = step
            n = round(seconds * RATE)
            if kind == "silence":
                x = np.zeros(n, dtype="<i2")
            else:
                x = np.round(NOISE_RMS * 32768 * rng.standard_normal(n)).astype("<i2")
            entry = {"kind": kind, "seconds": seconds}
        recipe.append({"start": at, "end": at + len(x), **entry})
        pieces.append(x)
        at += len(x)
    samples = np.concatenate(pieces)
    path = out / "pauses.flac"
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["flac", "-s", "-f", "-8", "--no-padding", "--force-raw-format",
                    "--endian=little", "--sign=signed", "--channels=1", "--bps=16",
                    f"--sample-rate={RATE}", "-o", str(path), "-"],
                   input=samples.tobytes(), check=True)
    assert np.array_equal(read_flac16(path), samples)
    print(f"{path}: {len(samples)} samples ({len(samples) / RATE:.2f} s), "
          f"{path.stat().st_size} bytes")
    return {
        "sdist": SDIST, "sdist_sha256": SDIST_SHA256,
        "clips": {CLIP_DIR + CLIP.format(k): {"sha256": v} for k, v in CLIPS.items()},
        "licence": "LibriVox's public-domain recording of Jane Austen's Sense and "
                   "Sensibility, chapter 1 (sense_and_sensibility_01_austen_64kb.mp3), as "
                   "pocketsphinx's test data keeps it (16 kHz mono 16-bit); the sdist is "
                   "under CMU's BSD-style LICENSE",
        "cuts": "clip_start/clip_end in samples of the clip: word boundaries of pocketsphinx's "
                "alignments (CLIP.json in the sdist, 10 ms grid)",
        "noise": f"numpy.round({NOISE_RMS} * 32768 * numpy.random.default_rng({NOISE_SEED})"
                 ".standard_normal(n)).astype(int16), one generator drawn in recipe order",
        "flac": subprocess.run(["flac", "--version"], check=True, capture_output=True,
                               text=True).stdout.strip() + " -8 --no-padding",
        "samples": len(samples),
        "sha256_int16_le": sha256(samples.tobytes()),
        "pieces": recipe,
    }


# --- vad ---------------------------------------------------------------------------------

def onnx_facts(model_bytes):
    import onnx

    m = onnx.load_from_string(model_bytes)

    def value(v):
        t = v.type.tensor_type
        return {"name": v.name, "type": onnx.TensorProto.DataType.Name(t.elem_type),
                "shape": [d.dim_param or d.dim_value for d in t.shape.dim]}

    ops = []
    for n in m.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        ops.append({"op": n.op_type, **{k: v.decode() if isinstance(v, bytes) else v
                                          for k, v in attrs.items()}})
    return {"ir_version": m.ir_version,
            "opset": {o.domain or "ai.onnx": o.version for o in m.opset_import},
            "producer": f"{m.producer_name} {m.producer_version}",
            "inputs": [value(v) for v in m.graph.input],
            "outputs": [value(v) for v in m.graph.output],
            "op_types": sorted({n.op_type for n in m.graph.node}),
            "nodes": ops,
            "initializers": {i.name: list(i.dims) for i in m.graph.initializer}}


def traced(fn, code, lines):
    """fn() with the line numbers of `code` that ran added to `lines`."""
    def tracer(frame, event, arg):
        if frame.f_code is not code:
            return None

        def local(frame, event, arg):
            if event == "line":
                lines.add(frame.f_lineno)
            return local
        return local

    sys.settrace(tracer)
    try:
        return fn()
    finally:
        sys.settrace(None)


def make_vad(out, downloads, recipe):
    wheel = pip_wheel(f"faster-whisper=={FW_VERSION}", FW_WHEEL_SHA256, downloads)
    onnx_bytes = zipfile.ZipFile(wheel).read(VAD_MEMBER)
    installed = Path(fw_vad.get_assets_path()) / "silero_vad_v6.onnx"
    assert sha256(onnx_bytes) == VAD_SHA256 == sha256(installed.read_bytes())

    code = get_speech_timestamps.__code__
    ran = set()
    model = get_vad_model()
    inputs, results, chunks = {}, {}, {}
    for name in INPUTS:
        audio, inputs[name] = load(name)
        window = 512
        padded = np.pad(audio, (0, window - audio.shape[0] % window))
        fed = padded.copy()
        probs = model(fed)  # __call__ zeroes fed's last 64 samples in place (see README)
        assert probs.dtype == np.float32 and probs.shape == (len(padded) // window,)
        np.save(out / "vad_probs" / f"{name}.npy", probs)
        inputs[name]["frames"] = len(probs)
        inputs[name]["padded_samples"] = len(padded)
        results[name] = {}
        for key, options in OPTION_SETS.items():
            speech = traced(lambda: get_speech_timestamps(audio, VadOptions(**options)),
                            code, ran)
            results[name][key] = speech
        chunks[name] = []
        for key, max_duration, note in COLLECTS:
            speech = get_speech_timestamps(audio, VadOptions(**OPTION_SETS[key]))
            _, meta = collect_chunks(audio, speech, max_duration=max_duration)
            chunks[name].append({"options": key, "max_duration": max_duration, "note": note,
                                 "chunks": meta})
    body = {n for _, _, n in code.co_lines() if n and n > code.co_firstlineno}
    source = Path(fw_vad.__file__).read_text().splitlines()
    not_run = [{"line": n, "code": source[n - 1].strip()} for n in sorted(body - ran)]
    value = {
        "faster_whisper": faster_whisper.__version__,
        "onnxruntime": __import__("onnxruntime").__version__,
        "numpy": np.__version__,
        "model": {
            "wheel": FW_WHEEL, "wheel_sha256": FW_WHEEL_SHA256, "member": VAD_MEMBER,
            "sha256": VAD_SHA256, "size": len(onnx_bytes),
            "session": "onnxruntime CPUExecutionProvider, inter_op_num_threads=1, "
                       "intra_op_num_threads=1 (faster_whisper.vad.SileroVADModel)",
            **onnx_facts(onnx_bytes)},
        "inputs": inputs,
        "vad_probs": "vad_probs/NAME.npy: get_vad_model()(numpy.pad(audio, (0, 512 - "
                     "len(audio) % 512))), float32, one per 512 samples",
        "option_sets": {k: dataclasses.asdict(VadOptions(**v)) for k, v in OPTION_SETS.items()},
        "option_notes": "max_speech_duration_s null = float('inf'); neg_threshold null = "
                        "max(threshold - 0.15, 0.01)",
        "speech_timestamps": results,
        "collect_chunks": chunks,
        "get_speech_timestamps_lines_not_run": not_run,
        "pauses_recipe": recipe,
    }
    write_json(out / "vad.json", value)
    print("get_speech_timestamps lines never run:", not_run)


# --- language ----------------------------------------------------------------------------

def whisper_model(path):
    return WhisperModel(str(path), device="cpu", compute_type="float32", cpu_threads=2)


def make_language(out, base_dir):
    model = whisper_model(base_dir)
    results = {}
    for name in LANGUAGE_INPUTS:
        audio, info = load(name, LANGUAGE_INPUTS)
        if LANGUAGE_INPUTS[name][1] == "flac":
            same = np.array_equal(faster_whisper.decode_audio(str(ROOT / info["path"])), audio)
            info["pyav_decode_audio_same_samples"] = same
        # WhisperModel.transcribe with language=None, clip_timestamps "0", no VAD
        features = model.feature_extractor(audio)
        seek = 0
        language, probability, all_probs = model.detect_language(features=features[..., seek:])
        results[name] = {"input": info, "features_shape": list(features.shape),
                         "language": language, "language_probability": probability,
                         "all_language_probs": [[k, p] for k, p in all_probs]}
        print(name, language, probability)
    write_json(out / "detect_language.json", {
        "faster_whisper": faster_whisper.__version__,
        "ctranslate2": __import__("ctranslate2").__version__,
        "model": "base (CTranslate2 checkpoint of models/catalog.toml's PyPI wheels)",
        "load": 'WhisperModel(dir, device="cpu", compute_type="float32", cpu_threads=2)',
        "procedure": "as WhisperModel.transcribe when language is None: features = "
                     "model.feature_extractor(audio) (the whole audio and 160 zeros, the "
                     "extractor's default padding); model.detect_language(features=features"
                     "[..., 0:]) with language_detection_segments=1, "
                     "language_detection_threshold=0.5: the first 3000 frames, pad_or_trim, "
                     "encoder, CTranslate2's detect_language",
        "results": results,
    })


# --- transcribe --------------------------------------------------------------------------

def segments(found):
    return [{k: getattr(s, k) for k in SEGMENT_KEYS} for s in found]


def make_transcribe(out, dirs):
    results = {}
    for name in ("news_en", "pauses"):
        audio, info = load(name)
        results[name] = {"input": info}
        for model_name in MODELS:
            model = whisper_model(dirs[model_name])
            language = "en" if model.model.is_multilingual else None
            runs = {}
            found, ti = BatchedInferencePipeline(model).transcribe(
                audio, batch_size=8, language=language)
            runs["batched"] = {"call": "BatchedInferencePipeline(model).transcribe(audio, "
                               f"batch_size=8, language={language!r})",
                               "segments": segments(found), "info": ti}
            found, ti = model.transcribe(audio, vad_filter=True, language=language)
            runs["sequential_vad"] = {"call": "model.transcribe(audio, vad_filter=True, "
                                      f"language={language!r})",
                                      "segments": segments(found), "info": ti}
            for key, run in runs.items():
                print(name, model_name, key, " ".join(s["text"] for s in run["segments"]))
            results[name][model_name] = runs
    write_json(out / "batched.json", {
        "faster_whisper": faster_whisper.__version__,
        "ctranslate2": __import__("ctranslate2").__version__,
        "load": 'WhisperModel(dir, device="cpu", compute_type="float32", cpu_threads=2); '
                "no preprocessor_config.json in dir, so FeatureExtractor's defaults (80 mels, "
                "30 s chunks), the values of both models",
        "language": "base is multilingual: language='en' is passed; tiny.en is English-only "
                    "and is given language=None, which transcribe() turns into 'en'",
        "defaults": {
            "batched": "BatchedInferencePipeline.transcribe defaults: beam_size=5, best_of=5, "
                       "temperature [0.0, ...] of which only the first is used (no fallback), "
                       "without_timestamps=True, condition_on_previous_text=False, "
                       "vad_filter=True with VadOptions(max_speech_duration_s=chunk_length=30,"
                       " min_silence_duration_ms=160), collect_chunks max_duration=30, "
                       "max_initial_timestamp=0.0, batch_size=8 (given); segments' times "
                       "mapped back by restore_speech_timestamps; info.transcription_options"
                       " below has every value",
            "sequential_vad": "WhisperModel.transcribe defaults: beam_size=5, best_of=5, "
                              "temperatures 0.0-1.0 step 0.2 with fallback, timestamps, "
                              "condition_on_previous_text=True, VadOptions() (threshold 0.5, "
                              "min_silence_duration_ms 2000, speech_pad_ms 400), collect_chunks "
                              "without max_duration; info.transcription_options below",
        },
        "results": results,
    })


STEPS = ("audio", "vad", "language", "transcribe")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", nargs="?", type=Path, default=HERE / "faster_whisper",
                        help="output directory (default: faster_whisper/ beside this script)")
    parser.add_argument("--only", default=",".join(STEPS),
                        help=f"comma-separated steps among {','.join(STEPS)}")
    parser.add_argument("--downloads", type=Path,
                        help="directory to keep (and reuse) the downloaded wheels and sdist")
    parser.add_argument("--models", type=Path, help="directory with tiny.en/ and base/ "
                        "CTranslate2 checkpoints (model.bin joined); default: from the wheels")
    args = parser.parse_args()
    steps = set(args.only.split(","))
    assert steps <= set(STEPS), steps
    out = args.out.resolve()
    global PAUSES
    PAUSES = out / "pauses.flac"
    (out / "vad_probs").mkdir(parents=True, exist_ok=True)
    assert faster_whisper.__version__ == FW_VERSION, faster_whisper.__version__
    print(f"faster-whisper {faster_whisper.__version__}, numpy {np.__version__}, "
          f"python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        downloads = args.downloads.resolve() if args.downloads else work / "downloads"
        ct2 = lambda name: (args.models / name) if args.models else ct2_checkpoint(
            name, work, downloads)
        recipe = None
        if "audio" in steps:
            recipe = make_audio(out, downloads)
        if "vad" in steps:
            if recipe is None and (out / "vad.json").exists():
                recipe = json.loads((out / "vad.json").read_text())["pauses_recipe"]
            make_vad(out, downloads, recipe)
        if "language" in steps:
            make_language(out, ct2("base"))
        if "transcribe" in steps:
            make_transcribe(out, {name: ct2(name) for name in MODELS})


if __name__ == "__main__":
    sys.exit(main())
