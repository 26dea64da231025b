"""Hugging Face Whisper checkpoints with random weights, for `models convert --from-hf`.

Writes, next to this script:
- tiny/: `save_pretrained` of a small random WhisperForConditionalGeneration (width 64,
  2 heads, 2 + 2 layers, FFN 256, vocabulary 600, 80 mel bins), float32, one
  model.safetensors;
- sharded/: the same architecture with other weights, saved in float16 and cut into shards
  of at most 300 kB (model-0000N-of-0000M.safetensors and model.safetensors.index.json);
- bf16/: another set of weights saved in bfloat16, one file;
- */expected_encoder.npy: the encoder's output (its first 200 positions) on OpenAI's jfk
  log-mel (tests/data/reference/jfk.mel80_openai.npy), computed in float32 from the weights
  as saved (float16 and bfloat16 ones widened);
- */expected_logits.npy: the decoder's logits for the tokens in TOKENS after that encoder
  output, positions 2 to 5 (what a decoder fed the first 3 tokens, then one at a time, gives).

Run: python3 make.py (needs torch, transformers, numpy and the reference directory).
"""

from pathlib import Path

import numpy as np
import torch
from transformers import WhisperConfig, WhisperForConditionalGeneration

HERE = Path(__file__).resolve().parent
REFERENCE = HERE.parents[1] / "reference"
TOKENS = [5, 17, 300, 42, 599, 0]
POSITIONS = 200


def config() -> WhisperConfig:
    return WhisperConfig(
        vocab_size=600,
        num_mel_bins=80,
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=256,
        decoder_ffn_dim=256,
        max_source_positions=1500,
        max_target_positions=448,
        decoder_start_token_id=1,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        suppress_tokens=[],
        begin_suppress_tokens=[2],
    )


def make(name: str, seed: int, dtype: torch.dtype, shard: str | None) -> None:
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config()).eval()
    with torch.no_grad():
        # Biases and norms away from their initial zeros and ones, so that each is checked.
        for n, p in model.named_parameters():
            if n.endswith("bias") or "layer_norm" in n:
                p.add_(torch.empty_like(p).uniform_(-0.2, 0.2))
    out = HERE / name
    saved = model.to(dtype)
    kwargs = {"max_shard_size": shard} if shard else {}
    saved.save_pretrained(out, safe_serialization=True, **kwargs)
    # The outputs of the weights as saved, computed in float32.
    model = saved.float().eval()
    mel = np.load(REFERENCE / "jfk.mel80_openai.npy").astype(np.float32).reshape(1, 80, 3000)
    with torch.no_grad():
        features = model.model.encoder(torch.from_numpy(mel)).last_hidden_state
        logits = model(
            encoder_outputs=(features,), decoder_input_ids=torch.tensor([TOKENS])
        ).logits
    np.save(out / "expected_encoder.npy", features[0, :POSITIONS].numpy().astype(np.float32))
    np.save(out / "expected_logits.npy", logits[0, 2:].numpy().astype(np.float32))


if __name__ == "__main__":
    make("tiny", 1, torch.float32, None)
    make("sharded", 2, torch.float16, "300KB")
    make("bf16", 3, torch.bfloat16, None)
