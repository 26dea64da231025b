"""The dispatch shapes the host requests for a Whisper encoder, computed as the host does.

Every number here mirrors the Rust side, which is the source of truth:

- ``gemm_layout`` is ``GemmContract::layout`` of ``kernels/src/gemm.rs`` for
  ``GemmContract::XDNA1`` (``dev = "npu"``: tiles m = 64, k = 64, n = 32; 4 x 4 cores; 4
  memory tiles of 512 KiB, ``kernels/src/hw.rs``) or ``GemmContract::XDNA2`` (``"npu2"``: 4 x 8
  cores, 8 memory tiles): M padded to 256-row blocks, K to 64, N to 32 times the columns, and
  M cut into as few dispatches as fit ``m_chunk * k_pad * 2`` bytes in the memory tiles (at
  least one 256-row block), their rows shared out evenly in whole blocks.
- ``stream_layout`` is ``StreamLayout::new`` of ``kernels/src/device.rs`` together with the
  per-dispatch row count that ``Npu::stream`` (``kernels/src/npu/mod.rs``) asks the manifest for:
  half of the staging memory holds one dispatch's input, ``rows_per_dispatch =
  floor(staging / 2 / (cols * 2))``, ``dispatches = ceil(rows / rows_per_dispatch)``, and every
  dispatch has ``per = ceil(rows / dispatches)`` rows, one more when ``per * cols`` is odd
  (the DMAs move 32-bit words), the last one padded by the host.
- ``attention_layout`` is ``GemmContract::attention`` of ``kernels/src/attention.rs``: one
  head's ``Q K^T`` with C in bfloat16 left on the device (``width = n_pad`` wide), the
  softmax over its ``m`` rows of ``n`` values at a row stride of ``width`` in one dispatch,
  and ``P V`` with K padded to ``width``.
- ``whisper_kernels`` lists the products of a Whisper encoder as the project's exporter and
  graph rewrite produce them (``src/model/export/encoder.rs``, ``src/rewrite/``): the two
  convolutions as GEMMs over im2col patches with bias and GELU in the epilogue, separate Q, K,
  V projections (K with a zero bias), the output projection, the two FFN layers, and one head of
  attention a call (its two products and its softmax); standalone GELU for the three places a
  GELU can follow a product when it is not fused.
- ``precision="bf16x3"`` is ``Precision::Bf16x3``: the same GEMM kernels over operands the
  host expands (``gemm::split``: K padded to the k-tile, three times), GELU and softmax in
  float32 on the host (``GemmContract::softmax_gelu_on_device``), so every GELU epilogue
  becomes a bias epilogue and a head of attention is two float32-output products.

Run as a script, it prints the shapes of one model (``python3 shapes.py base``).
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass

# kernels/src/hw.rs: core rows and columns of the whole array, per mlir-aie target.
ARRAYS = {"npu": (4, 4), "npu2": (4, 8)}
MEM_TILE_BYTES = 512 * 1024

# kernels/src/gemm.rs, GemmContract::XDNA1 and XDNA2: the same tiles, one memory tile a column.
TILE_M = 64
TILE_K = 64
TILE_N = 32


def staging_bytes(dev: str) -> int:
    """Memory-tile bytes that hold one dispatch's rows: one 512 KiB tile a column."""
    return ARRAYS[dev][1] * MEM_TILE_BYTES

# Whisper's encoder: 1500 positions after the stride-2 convolution, 3000 mel frames before.
N_FRAMES = 3000
N_POSITIONS = 1500
HEAD_DIM = 64

# d_model and mel bins of OpenAI's checkpoints (whisper/__init__.py, model dims).
MODELS = {
    "tiny": (384, 80),
    "base": (512, 80),
    "small": (768, 80),
    "medium": (1024, 80),
    "large": (1280, 128),
}


@dataclass(frozen=True)
class GemmLayout:
    """``GemmLayout`` of kernels/src/gemm.rs."""

    m: int
    k: int
    n: int
    m_pad: int
    k_pad: int
    n_pad: int
    m_chunk: int
    dispatches: int


PRECISIONS = {"bf16": 1, "bf16x3": 3}


def gemm_layout(m: int, k: int, n: int, dev: str = "npu", precision: str = "bf16") -> GemmLayout:
    """``GemmContract::XDNA1.layout(m, k, n)`` (``XDNA2`` for ``npu2``; K three times as
    long under bf16x3)."""
    k_pad = max(math.ceil(k / TILE_K), 1) * TILE_K * PRECISIONS[precision]
    return gemm_layout_k_pad(m, k, n, k_pad, dev)


@dataclass(frozen=True)
class StreamLayout:
    """``StreamLayout::new`` of kernels/src/device.rs, plus the host's rows per dispatch."""

    rows: int
    cols: int
    rows_per_dispatch: int
    dispatches: int
    per: int


def stream_layout(rows: int, cols: int, dev: str = "npu") -> StreamLayout:
    """How ``Npu::stream`` cuts ``rows`` rows of ``cols`` values into dispatches."""
    row_bytes = max(cols, 1) * 2
    rows_per_dispatch = max(staging_bytes(dev) // 2 // row_bytes, 1)
    dispatches = max(math.ceil(rows / rows_per_dispatch), 1)
    per = math.ceil(rows / dispatches)
    if per * cols % 2 == 1:
        # The DMAs move 32-bit words: a dispatch's bf16 values are even (as Npu::stream).
        per += 1
    return StreamLayout(rows, cols, rows_per_dispatch, dispatches, per)


@dataclass(frozen=True)
class Kernel:
    """One manifest entry: a kernel kind at one dispatch shape."""

    kind: str  # gemm | softmax | gelu
    # gemm: (M, K, N) of one dispatch; softmax: (rows, cols, row stride); gelu: (n,)
    shape: tuple[int, ...]
    epilogue: str = "none"  # gemm only: none | bias | bias_gelu
    output: str = "f32"  # gemm only: f32 | bf16
    used_by: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        dims = "x".join(str(s) for s in self.shape)
        if self.kind == "gemm":
            suffix = "_bf16" if self.output == "bf16" else ""
            return f"gemm_{dims}_{self.epilogue}{suffix}"
        return f"{self.kind}_{dims}"


def gemm_layout_k_pad(m: int, k: int, n: int, k_pad: int, dev: str = "npu") -> GemmLayout:
    """``GemmContract::XDNA1.layout_with_k_pad(m, k, n, k_pad)`` (``XDNA2`` for ``npu2``)."""
    assert k_pad >= max(k, 1) and k_pad % TILE_K == 0
    rows, columns = ARRAYS[dev]
    row_block = rows * TILE_M
    col_block = columns * TILE_N
    m_pad = max(math.ceil(m / row_block), 1) * row_block
    n_pad = max(math.ceil(n / col_block), 1) * col_block
    fit = staging_bytes(dev) // (k_pad * 2)
    most = min(max((fit // row_block) * row_block, row_block), m_pad)
    dispatches = math.ceil(m_pad / most)
    m_chunk = math.ceil(m_pad // row_block / dispatches) * row_block
    return GemmLayout(m, k, n, m_pad, k_pad, n_pad, m_chunk, dispatches)


@dataclass(frozen=True)
class AttentionLayout:
    """``AttentionLayout`` of kernels/src/attention.rs."""

    m: int
    n: int
    qk: GemmLayout
    width: int
    pv: GemmLayout


def attention_layout(m: int, d: int, n: int, dv: int, dev: str = "npu") -> AttentionLayout:
    """``GemmContract::XDNA1.attention(AttentionDims { m, d, n, dv })`` (``XDNA2``: npu2)."""
    qk = gemm_layout(m, d, n, dev)
    return AttentionLayout(m, n, qk, qk.n_pad, gemm_layout_k_pad(m, n, dv, qk.n_pad, dev))


def whisper_products(d_model: int, n_mels: int) -> list[tuple[str, int, int, int, str]]:
    """``(name, M, K, N, epilogue)`` of every matrix product of one encoder layer stack."""
    d = d_model
    return [
        ("conv1", N_FRAMES, 3 * n_mels, d, "bias_gelu"),
        ("conv2", N_POSITIONS, 3 * d, d, "bias_gelu"),
        ("q_proj", N_POSITIONS, d, d, "bias"),
        # The K projection has no bias; the host gives it a zero bias, so that it runs on
        # the Q, V and output projections' kernel (src/rewrite/npu_matmul.rs).
        ("k_proj", N_POSITIONS, d, d, "bias"),
        ("v_proj", N_POSITIONS, d, d, "bias"),
        ("out_proj", N_POSITIONS, d, d, "bias"),
        ("fc1", N_POSITIONS, d, 4 * d, "bias_gelu"),
        ("fc2", N_POSITIONS, 4 * d, d, "bias"),
    ]


def whisper_kernels(
    model: str, n_mels: int | None = None, dev: str = "npu", precision: str = "bf16"
) -> list[Kernel]:
    """Every kernel, at every dispatch shape, that the host requests for ``model`` on an NPU
    of target ``dev`` under ``precision``."""
    d, mels = MODELS[model]
    if n_mels is not None:
        mels = n_mels
    found: dict[tuple, list[str]] = {}

    def add(kind: str, shape: tuple[int, ...], epilogue: str, user: str, output="f32") -> None:
        found.setdefault((kind, shape, epilogue, output), []).append(user)

    def gemm(layout: GemmLayout) -> tuple[int, int, int]:
        return (layout.m_chunk, layout.k_pad, layout.n_pad)

    if precision == "bf16x3":
        # GELU on the host after the bias; a head is two products of activations around the
        # host's softmax (AttentionLayout::calls).
        for name, m, k, n, epilogue in whisper_products(d, mels):
            epilogue = "bias" if epilogue == "bias_gelu" else epilogue
            add("gemm", gemm(gemm_layout(m, k, n, dev, precision)), epilogue, f"{name} (bf16x3)")
        qk = gemm_layout(N_POSITIONS, HEAD_DIM, N_POSITIONS, dev, precision)
        add("gemm", gemm(qk), "none", "attention Q K^T (bf16x3)")
        pv = gemm_layout(N_POSITIONS, N_POSITIONS, HEAD_DIM, dev, precision)
        add("gemm", gemm(pv), "none", "attention P V (bf16x3)")
        return [
            Kernel(kind, shape, epilogue, output, tuple(users))
            for (kind, shape, epilogue, output), users in found.items()
        ]
    for name, m, k, n, epilogue in whisper_products(d, mels):
        add("gemm", gemm(gemm_layout(m, k, n, dev)), epilogue, name)
    # The host fuses Q K^T, softmax and P V into one device call a head (ops/src/attention.rs,
    # kernels/src/attention.rs): the scores and probabilities stay on the device.
    head = attention_layout(N_POSITIONS, HEAD_DIM, N_POSITIONS, HEAD_DIM, dev)
    add("gemm", gemm(head.qk), "none", "attention Q K^T (scores to bf16)", "bf16")
    add("softmax", (head.m, head.n, head.width), "none", "attention softmax (one head a call)")
    add("gemm", gemm(head.pv), "none", "attention P V")
    for name, elements in [
        ("conv1 GELU", N_FRAMES * d),
        ("conv2 GELU", N_POSITIONS * d),
        ("fc1 GELU", N_POSITIONS * 4 * d),
    ]:
        add("gelu", (stream_layout(elements, 1, dev).per,), "none", name)
    return [
        Kernel(kind, shape, epilogue, output, tuple(users))
        for (kind, shape, epilogue, output), users in found.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", choices=sorted(MODELS))
    parser.add_argument("--n-mels", type=int, default=None)
    parser.add_argument("--target", choices=sorted(ARRAYS), default="npu")
    parser.add_argument("--precision", choices=sorted(PRECISIONS), default="bf16")
    parser.add_argument("--json", action="store_true", help="one JSON object a line")
    args = parser.parse_args()
    for kernel in whisper_kernels(args.model, args.n_mels, args.target, args.precision):
        if args.json:
            print(json.dumps({**asdict(kernel), "name": kernel.name}))
        else:
            print(f"{kernel.name:32} used by {', '.join(kernel.used_by)}")


if __name__ == "__main__":
    main()
