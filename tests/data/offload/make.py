"""A small BERT-like encoder that is not Whisper, for the offload rewrite on any tract model.

Writes, next to this script:
- bert_like.onnx: 2 pre-norm transformer layers (width 128, 4 heads, FFN 512, exact GELU), a
  final LayerNorm, random weights (seed 0), input [1, 128, 128]; exported by torch.onnx.export
  (TorchScript path, opset 17);
- bert_like.input.npy: a random input;
- bert_like.expected.npy: PyTorch's output on it, float32.

Run: python3 make.py (needs torch and numpy).
"""

from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
WIDTH, HEADS, FFN, LAYERS, TOKENS = 128, 4, 512, 2, 128


class Layer(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln1 = nn.LayerNorm(WIDTH)
        self.qkv = nn.Linear(WIDTH, 3 * WIDTH)
        self.out = nn.Linear(WIDTH, WIDTH)
        self.ln2 = nn.LayerNorm(WIDTH)
        self.fc1 = nn.Linear(WIDTH, FFN)
        self.fc2 = nn.Linear(FFN, WIDTH)

    def forward(self, x):
        b, t, d = x.shape
        h = self.ln1(x)
        q, k, v = self.qkv(h).split(WIDTH, dim=-1)
        split = lambda z: z.view(b, t, HEADS, d // HEADS).transpose(1, 2)
        q, k, v = split(q), split(k), split(v)
        scores = q @ k.transpose(-1, -2) / (d // HEADS) ** 0.5
        a = torch.softmax(scores, dim=-1) @ v
        x = x + self.out(a.transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(nn.functional.gelu(self.fc1(self.ln2(x))))


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList(Layer() for _ in range(LAYERS))
        self.ln = nn.LayerNorm(WIDTH)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return self.ln(x)


def main():
    torch.manual_seed(0)
    model = Encoder().eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1 and p.shape[0] != WIDTH:
                p.uniform_(-0.1, 0.1)
        x = torch.randn(1, TOKENS, WIDTH)
        y = model(x)
    torch.onnx.export(
        model,
        (x,),
        HERE / "bert_like.onnx",
        input_names=["x"],
        output_names=["y"],
        opset_version=17,
        dynamo=False,
    )
    np.save(HERE / "bert_like.input.npy", x.numpy().astype(np.float32))
    np.save(HERE / "bert_like.expected.npy", y.numpy().astype(np.float32))


if __name__ == "__main__":
    main()
