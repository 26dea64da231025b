"""Makes the exporter fixtures of tests/exporters.rs: one small random Whisper encoder
(80 mels, d_model 64, 2 heads, 2 layers, 1500 positions), exported by each exporter people
use, with the PyPI versions this was run with:

  torch 2.15.0, onnx 1.23.2, onnxscript 0.7.2, openai-whisper 20250625,
  transformers 4.57.6, optimum 2.1.0, optimum-onnx 0.1.0, onnxconverter-common 1.16.0

  python3 tests/data/exporters/make.py   # from the repository root, with
                                         # ../shared/reference (or $AMANUENSIS_REFERENCE)

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
REFERENCE = Path(os.environ.get("AMANUENSIS_REFERENCE", HERE.parents[2] / ".." / "shared" / "reference"))
D_MODEL, HEADS, LAYERS, N_MELS, CTX = 64, 2, 2, 80, 1500


def main():
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


if __name__ == "__main__":
    sys.exit(main())
