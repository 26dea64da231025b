"""Makes the exporter fixtures of tests/exporters.rs: one small random Whisper encoder
(80 mels, d_model 64, 2 heads, 2 layers, 1500 positions), exported by each exporter people
use, with the PyPI versions this was run with:

  torch 2.15.0, onnx 1.23.2, onnxscript 0.7.2, openai-whisper 20250625,
  transformers 4.57.6, optimum 2.1.0, optimum-onnx 0.1.0, onnxconverter-common 1.16.0

  python3 tests/data/exporters/make.py   # from the repository root, with
                                         # tests/data/reference

Writes, next to this script:
  openai-torchscript-opset17.onnx   torch.onnx.export(dynamo=False, opset 17): Erf GELU,
                                    LayerNormalization
  openai-torchscript-opset20.onnx   the same at opset 20: a Gelu node
  openai-dynamo.onnx                torch.onnx.export(dynamo=True), the default in torch 2.x,
                                    with a dynamic batch dimension
  openai.expected.npy               openai-whisper's PyTorch AudioEncoder on jfk.mel80_openai.npy
  optimum-opset14.onnx              optimum-cli export onnx --opset 14: LayerNorm decomposed into
                                    ReduceMean/Sub/Pow/Sqrt/Div
  optimum-opset17.onnx, optimum-opset18.onnx
  optimum-fp16.onnx                 optimum-opset18.onnx converted to float16 throughout,
                                    inputs and outputs included (onnxconverter-common), as the
                                    `*_fp16.onnx` files of Hugging Face repositories are made
  optimum-fp16-io32.onnx            the same with float32 inputs and outputs (keep_io_types)
  optimum.expected.npy              transformers' WhisperEncoder on jfk.mel80_openai.npy

And one small random Whisper decoder (vocabulary 1000, d_model 64, 2 heads, 2 layers, 448
positions) with its encoder, exported by optimum with a KV cache
(`--task automatic-speech-recognition-with-past`), into decoders/:
  optimum-split-opset18/            decoder_model.onnx + decoder_with_past_model.onnx
  optimum-split-opset14/            the same at opset 14 (LayerNorm decomposed)
  optimum-merged-opset18/           decoder_model_merged.onnx only (an `If` on use_cache_branch)
  decoder.expected.npy              transformers' decoder logits [8, 1000] for the token ids
                                    DECODER_PROMPT (one forward, 5 rows) then DECODER_STEPS (one
                                    token at a time with the KV cache, 3 rows), the encoder
                                    hidden states being optimum.expected.npy

  python3 tests/data/exporters/make.py --decoders   # remakes the decoder fixtures only

The weights are random (seeded), made here: no third-party checkpoint is involved.
"""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import whisper.model
from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

HERE = Path(__file__).resolve().parent
REFERENCE = HERE.parents[1] / "reference"
D_MODEL, HEADS, LAYERS, N_MELS, CTX = 64, 2, 2, 80, 1500
DECODER_VOCAB, DECODER_LAYERS, TEXT_CTX = 1000, 2, 448
DECODER_PROMPT = [998, 3, 17, 256, 999]
DECODER_STEPS = [42, 7, 512]


def make_decoders():
    torch.manual_seed(1)
    config = WhisperConfig(
        num_mel_bins=N_MELS, d_model=D_MODEL, encoder_layers=LAYERS, decoder_layers=DECODER_LAYERS,
        encoder_attention_heads=HEADS, decoder_attention_heads=HEADS, encoder_ffn_dim=4 * D_MODEL,
        decoder_ffn_dim=4 * D_MODEL, max_source_positions=CTX, max_target_positions=TEXT_CTX,
        vocab_size=DECODER_VOCAB, decoder_start_token_id=998, eos_token_id=997, pad_token_id=997,
        bos_token_id=997,
    )
    model = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():
        for p in model.model.decoder.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        hidden = torch.from_numpy(np.load(HERE / "optimum.expected.npy"))
        out = model(encoder_outputs=(hidden,), decoder_input_ids=torch.tensor([DECODER_PROMPT]),
                    use_cache=True)
        rows, past = [out.logits[0]], out.past_key_values
        for token in DECODER_STEPS:
            out = model(encoder_outputs=(hidden,), decoder_input_ids=torch.tensor([[token]]),
                        past_key_values=past, use_cache=True)
            rows.append(out.logits[0])
            past = out.past_key_values
        np.save(HERE / "decoders" / "decoder.expected.npy", torch.cat(rows).numpy())
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "model"
        model.save_pretrained(src)
        WhisperFeatureExtractor(feature_size=N_MELS).save_pretrained(src)
        for opset in (14, 18):
            out = Path(tmp) / f"opset{opset}"
            subprocess.run(
                ["optimum-cli", "export", "onnx", "--model", str(src), "--task",
                 "automatic-speech-recognition-with-past", "--opset", str(opset), str(out)],
                check=True,
            )
            split = HERE / "decoders" / f"optimum-split-opset{opset}"
            shutil.rmtree(split, ignore_errors=True)
            split.mkdir(parents=True)
            for name in ("decoder_model.onnx", "decoder_with_past_model.onnx", "config.json"):
                shutil.copy(out / name, split / name)
            if opset == 18:
                merged = HERE / "decoders" / "optimum-merged-opset18"
                shutil.rmtree(merged, ignore_errors=True)
                merged.mkdir(parents=True)
                for name in ("decoder_model_merged.onnx", "config.json"):
                    shutil.copy(out / name, merged / name)


def main():
    (HERE / "decoders").mkdir(exist_ok=True)
    if "--decoders" in sys.argv:
        return make_decoders()
    mel = torch.from_numpy(np.load(REFERENCE / "jfk.mel80_openai.npy"))[None]

    torch.manual_seed(0)
    enc = whisper.model.AudioEncoder(N_MELS, CTX, D_MODEL, HEADS, LAYERS).eval()
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        np.save(HERE / "openai.expected.npy", enc(mel).numpy())
    for opset in (17, 20):
        torch.onnx.export(
            enc, (mel,), HERE / f"openai-torchscript-opset{opset}.onnx", dynamo=False,
            opset_version=opset, input_names=["mel"], output_names=["audio_features"],
            dynamic_axes={"mel": {0: "batch"}, "audio_features": {0: "batch"}},
        )
    # A dynamic batch, as users export it: the graph then annotates every intermediate
    # tensor with a symbolic shape.
    program = torch.onnx.export(enc, (mel,), dynamo=True, input_names=["mel"],
                                output_names=["audio_features"],
                                dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    program.save(HERE / "openai-dynamo.onnx")

    torch.manual_seed(0)
    config = WhisperConfig(
        num_mel_bins=N_MELS, d_model=D_MODEL, encoder_layers=LAYERS, decoder_layers=1,
        encoder_attention_heads=HEADS, decoder_attention_heads=HEADS, encoder_ffn_dim=4 * D_MODEL,
        decoder_ffn_dim=4 * D_MODEL, max_source_positions=CTX, vocab_size=51865,
    )
    model = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():
        np.save(HERE / "optimum.expected.npy", model.model.encoder(mel).last_hidden_state.numpy())
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "model"
        model.save_pretrained(src)
        WhisperFeatureExtractor(feature_size=N_MELS).save_pretrained(src)
        for opset in (14, 17, 18):
            out = Path(tmp) / f"opset{opset}"
            subprocess.run(
                ["optimum-cli", "export", "onnx", "--model", str(src), "--task",
                 "automatic-speech-recognition", "--opset", str(opset), str(out)],
                check=True,
            )
            shutil.copy(out / "encoder_model.onnx", HERE / f"optimum-opset{opset}.onnx")

    import onnx
    from onnxconverter_common import float16

    model32 = onnx.load(HERE / "optimum-opset18.onnx")
    for name, keep_io in (("optimum-fp16.onnx", False), ("optimum-fp16-io32.onnx", True)):
        onnx.save(float16.convert_float_to_float16(model32, keep_io_types=keep_io), HERE / name)
    make_decoders()


if __name__ == "__main__":
    sys.exit(main())
