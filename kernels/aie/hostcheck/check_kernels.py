"""Holds kernels/aie's kernels (compiled for the host over model/aie_api) against the Rust
emulator, bit for bit; run by run.sh.

- GELU over every bfloat16 bit pattern (calls of 1000 values, so every call ends in a partial
  vector), and over float32 values, NaNs and infinities through ``gelu16`` (the GEMM epilogue's
  entry rounding);
- Softmax over rows of 1 to 1500 values: spreads of +-1 to +-60, masked (-inf) elements, rows
  of -inf only, with +inf, with NaN, tiny and huge values, zeros;
- the GEMM through the dataflow of gemm.py: the runtime access patterns, the memory tiles'
  transforms, the bias carried down the B stream, each core's loop run by the harness on its
  streams, the joined C written back through the drain patterns; compared with ``packed_gemm::gemm``
  (plus ``gelu::gelu`` for ``bias_gelu``, the rounding to bfloat16 for ``--output bf16``);
- one head of attention as the NPU runs it, the scores and probabilities kept in device
  layout between the kernels; compared with ``Emulator::attention``.

The dispatch shapes are the host's: the attention layouts from ``emuref attention-layout``
(``GemmContract::attention``), the GEMMs of every Whisper size from ``amanuensis inspect
--kernel-shapes`` (what build.sh builds).

Usage: check_kernels.py HARNESS EMUREF AMANUENSIS WORKDIR DEV (DEV: npu or npu2, the mmul
shape the harness was compiled with; AMANUENSIS: the amanuensis binary).
"""

from __future__ import annotations

import json
import random
import struct
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

aie = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(aie / "gemm"), str(aie / "softmax")]
import gemm  # noqa: E402  (gemm.py's plan needs no mlir-aie)
import softmax  # noqa: E402  (softmax.py's row access needs no mlir-aie)

harness, emuref, amanuensis = sys.argv[1], sys.argv[2], sys.argv[3]
work, dev = Path(sys.argv[4]), sys.argv[5]
family = {"npu": "xdna1", "npu2": "xdna2"}[dev]
random.seed(20240611)


def f32_bits(x: float) -> int:
    return struct.unpack("<I", struct.pack("<f", x))[0]


def bits_f32(b: int) -> float:
    return struct.unpack("<f", struct.pack("<I", b))[0]


def f32(x: float) -> float:
    return bits_f32(f32_bits(x))


def bf16(x: float) -> float:
    """x rounded to bfloat16, nearest even (the host's conversion)."""
    b = f32_bits(x)
    return bits_f32((b + 0x7FFF + ((b >> 16) & 1)) & 0xFFFF0000)


def write_words(path: Path, words: list[int], fmt: str = "I") -> None:
    path.write_bytes(struct.pack(f"<{len(words)}{fmt}", *words))


def read_words(path: Path) -> list[int]:
    data = path.read_bytes()
    return list(struct.unpack(f"<{len(data) // 4}I", data))


def run(*args) -> None:
    subprocess.run([str(a) for a in args], check=True)


def output(*args) -> str:
    return subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True).stdout


def attention_layout(m: int, d: int, n: int, dv: int) -> SimpleNamespace:
    """``GemmContract::attention`` of this device for one head, from the emulator's crate."""
    layout = json.loads(output(emuref, "attention-layout", m, d, n, dv, dev))
    return SimpleNamespace(qk=SimpleNamespace(**layout["qk"]), width=layout["width"],
                           pv=SimpleNamespace(**layout["pv"]))


def whisper_kernels(model: str, precision: str) -> list[dict]:
    """The kernels build.sh builds for a catalog encoder on this device: the host's list."""
    report = output(amanuensis, "inspect", "--kernel-shapes", "--model", model,
                    "--device-family", family, "--precision", precision)
    return json.loads(report)["kernels"]


def same(name: str, inputs: list[int], ours: list[int], theirs: list[int]) -> bool:
    assert len(ours) == len(theirs) == len(inputs), (len(ours), len(theirs), len(inputs))
    bad = [i for i in range(len(ours)) if ours[i] != theirs[i]]
    print(f"{name}: {len(ours)} values, {len(bad)} differ")
    for i in bad[:5]:
        print(f"    input {inputs[i]:08x}: kernel {ours[i]:08x}, emulator {theirs[i]:08x}")
    return not bad


def elementwise(name: str, words: list[int], harness_args: list, emuref_args: list) -> bool:
    x, h, r = work / "x.bin", work / "h.bin", work / "r.bin"
    write_words(x, words)
    run(harness, harness_args[0], x, h, *harness_args[1:])
    run(emuref, emuref_args[0], x, r, *emuref_args[1:])
    return same(name, words, read_words(h), read_words(r))


def check_gelu() -> bool:
    every_bf16 = [h << 16 for h in range(1 << 16)]
    ok = elementwise("gelu, every bfloat16", every_bf16, ["gelu", 1000], ["gelu"])
    words = [random.getrandbits(32) for _ in range(60000)]
    words += [f32_bits(f32(-10 + i * 1e-3)) for i in range(20001)]
    specials = [0.0, -0.0, 7.0, -7.0, 6.99, -6.99, 1e-40, -1e-40, 3.4e38, -3.4e38]
    words += [f32_bits(v) for v in specials]
    words += [0x7F800000, 0xFF800000, 0x7F800001, 0xFF800001, 0x7FC00000, 0x7FFFFFFF]
    words += [0x80000001, 0x00000001, 0x477FE000, 0xC77FE000]
    return elementwise("gelu, float32 (epilogue)", words, ["gelu32"], ["gelu"]) and ok


def softmax_rows(cols: int) -> list[float]:
    rows = [[bf16(random.uniform(-s, s)) for _ in range(cols)] for s in (1, 8, 60)]
    masked = [bf16(random.uniform(-30, 30)) for _ in range(cols)]
    masked[::3] = [float("-inf")] * len(masked[::3])
    rows.append(masked)
    rows.append([float("-inf")] * cols)
    with_inf = [bf16(random.uniform(-5, 5)) for _ in range(cols)]
    with_inf[cols // 2] = float("inf")
    rows.append(with_inf)
    with_nan = [bf16(random.uniform(-5, 5)) for _ in range(cols)]
    with_nan[-1] = float("nan")
    rows.append(with_nan)
    rows.append([bf16(random.uniform(-1e-38, 1e-38)) for _ in range(cols)])
    rows.append([bf16(random.uniform(-3e38, 3e38)) for _ in range(cols)])
    rows.append([0.0] * cols)
    return [v for row in rows for v in row]


def check_softmax() -> bool:
    ok = True
    for cols in (1, 2, 15, 16, 17, 33, 64, 1500):
        words = [f32_bits(v) if v == v else 0x7FC00000 for v in softmax_rows(cols)]
        ok &= elementwise(f"softmax, rows of {cols}", words, ["softmax", cols], ["softmax", cols])
    return ok


def gather(access: gemm.Access, data: list) -> list:
    """The elements a runtime DMA task reads (or the positions it writes), in order."""
    (s0, s1, s2, s3), (t0, t1, t2, t3) = access.sizes, access.strides
    out = []
    for i0 in range(s0):
        for i1 in range(s1):
            for i2 in range(s2):
                base = access.offset + i0 * t0 + i1 * t1 + i2 * t2
                out.extend(data[base + i3 * t3] for i3 in range(s3))
    return out


def transform(obj: list, dims: list[tuple[int, int]]) -> list:
    """A memory tile's DMA reading one object through (size, stride) dimensions, outermost
    first; the outermost dimension has no wrap, so it runs until the object is read whole."""
    inner = 1
    for size, _ in dims[1:]:
        inner *= size
    dims = [(len(obj) // inner, dims[0][1])] + list(dims[1:])
    index = [0]
    for size, stride in dims:
        index = [i + j * stride for i in index for j in range(size)]
    return [obj[i] for i in index]


def objects(stream: list, size: int) -> list[list]:
    assert len(stream) % size == 0
    return [stream[i : i + size] for i in range(0, len(stream), size)]


def gemm_dataflow(p: gemm.Plan, a_host: list[int], b_host: list[int], bias_host: list[int]) -> list[int]:
    """C of one dispatch of plan ``p`` (float32 words; bfloat16 outputs widened) computed by
    the cores of the harness on the streams gemm.py's runtime access patterns and memory-tile
    transforms make of the host buffers (bfloat16 words of A and B, the bias's halves)."""
    M, N = p.M, p.N
    paths = {name: work / f"{name}.bin" for name in ("a", "b", "c")}
    a_streams = [[] for _ in range(gemm.ROWS)]
    b_streams = [[] for _ in range(p.columns)]
    if p.has_bias:
        for col in range(p.columns):
            b_streams[col] += gather(p.bias_access(col), bias_host)
    bias_values = sum(len(s) for s in b_streams)
    for block, blocks, first, size in p.units():
        for row in range(gemm.ROWS):
            for task in p.a_tasks(block, blocks, row):
                a_streams[row] += gather(task, a_host)
        for col in range(p.columns):
            for task in p.b_tasks(col, first, size):
                b_streams[col] += gather(task, b_host)
    a_l1 = [[v for o in objects(s, p.m * p.k) for v in transform(o, p.a_to_core)] for s in a_streams]
    b_l1 = [[v for o in objects(s, p.k * p.n) for v in transform(o, p.b_to_core)] for s in b_streams]

    mode = "bf16" if p.output == "bf16" else p.epilogue
    C = [None] * (M * N)
    for col in range(p.columns):
        per_core = []
        for row in range(gemm.ROWS):
            write_words(paths["a"], a_l1[row], "H")
            write_words(paths["b"], b_l1[col], "H")
            # The core's loop counts are the runtime parameters the dispatch's sequence
            # writes (gemm.py's Plan.rtp), passed as the core reads them.
            run(harness, "core", paths["a"], paths["b"], paths["c"], *p.rtp(), mode)
            per_core.append(objects(read_words(paths["c"]), p.m * p.n))
        joined = [sum((per_core[row][t] for row in range(gemm.ROWS)), [])
                  for t in range(p.tiles_per_core)]
        if col == 0:
            GROUPED.append("rows" if p.rows_grouped else "columns")
        stream = [v for o in joined for v in transform(o, p.c_to_host)]
        positions = []
        for block, blocks, first, size in p.units():
            positions += gather(p.c_access(block, blocks, col, first, size), range(M * N))
        assert len(positions) == len(stream)
        for i, v in zip(positions, stream):
            assert C[i] is None, "two drains write one element"
            C[i] = v
    assert all(v is not None for v in C), "the drains do not cover C"
    # The bytes the shims moved, from the streams themselves, against the design's own count
    # and the host's prediction (GemmContract::dataflow): the same, or the prediction is not
    # of this design.
    moved = {"a": 2 * sum(len(s) for s in a_streams),
             "b": 2 * (sum(len(s) for s in b_streams) - bias_values),
             "bias": 2 * bias_values, "c": p.c_bytes * M * N}
    mode = "bf16" if p.output == "bf16" else p.epilogue
    predicted = json.loads(output(emuref, "dataflow", M, p.K, N, mode, dev))
    assert moved == p.dma_bytes() == predicted, (moved, p.dma_bytes(), predicted)
    DMA_CHECKED.append(M * p.K * N)
    return C


DMA_CHECKED = []
GROUPED = []


def check_gemm(M: int, K: int, N: int, epilogue: str, output: str = "f32", label: str = "") -> bool:
    p = gemm.plan(dev, M, K, N, epilogue=epilogue, output=output)
    A = [bf16(random.uniform(-2, 2)) for _ in range(M * K)]
    B = [bf16(random.uniform(-2, 2)) for _ in range(K * N)]
    bias = [f32(random.uniform(-1, 1)) for _ in range(N)]
    paths = {name: work / f"{name}.bin" for name in ("A", "B", "bias", "r")}
    for name, values in (("A", A), ("B", B), ("bias", bias)):
        write_words(paths[name], [f32_bits(v) for v in values])
    mode = "bf16" if output == "bf16" else epilogue
    run(emuref, "gemm", paths["A"], paths["B"], paths["bias"] if p.has_bias else "-",
        M, K, N, mode, paths["r"])
    bias_host = [half for v in bias for half in (f32_bits(v) & 0xFFFF, f32_bits(v) >> 16)]
    C = gemm_dataflow(p, [f32_bits(v) >> 16 for v in A], [f32_bits(v) >> 16 for v in B], bias_host)
    name = f"gemm {M}x{K}x{N} {mode} ({dev}, mmul {'x'.join(map(str, p.mmul))}, runtime parameters {p.rtp()}){label}"
    return same(name, list(range(M * N)), C, read_words(paths["r"]))


def padded(values: list[float], rows: int, cols: int, rows_pad: int, cols_pad: int) -> list[int]:
    """bfloat16 words of ``rows x cols`` values padded with zeros, as the host sends them."""
    out = [0] * (rows_pad * cols_pad)
    for r in range(rows):
        for c in range(cols):
            out[r * cols_pad + c] = f32_bits(bf16(values[r * cols + c])) >> 16
    return out


def check_attention(m: int, d: int, n: int, dv: int) -> bool:
    """One head through the device's chain as kernels/src/npu/mod.rs runs it: Q K^T into the
    bfloat16 scores, the strided softmax of softmax.py over them into zeroed probabilities,
    P V with K padded to the scores' width; against Emulator::attention, bit for bit."""
    lay = attention_layout(m, d, n, dv)
    qk, pv, width = lay.qk, lay.pv, lay.width
    Q = [random.uniform(-3, 3) for _ in range(m * d)]
    KT = [random.uniform(-3, 3) for _ in range(d * n)]
    V = [random.uniform(-2, 2) for _ in range(n * dv)]
    paths = {name: work / f"{name}.bin" for name in ("Q", "KT", "V", "r", "x", "y")}
    for name, values in (("Q", Q), ("KT", KT), ("V", V)):
        write_words(paths[name], [f32_bits(f32(v)) for v in values])
    run(emuref, "attention", paths["Q"], paths["KT"], paths["V"], m, d, n, dv, paths["r"])

    rows = max(qk.m_chunk * qk.dispatches, pv.m_chunk * pv.dispatches)
    q_host = padded(Q, m, d, rows, qk.k_pad)
    kt_host = padded(KT, d, n, qk.k_pad, width)
    v_host = padded(V, n, dv, width, pv.n_pad)

    scores = [0] * (rows * width)
    p = gemm.plan(dev, qk.m_chunk, qk.k_pad, width, output="bf16")
    for i in range(qk.dispatches):
        a = q_host[i * qk.m_chunk * qk.k_pad:(i + 1) * qk.m_chunk * qk.k_pad]
        span = slice(i * qk.m_chunk * width, (i + 1) * qk.m_chunk * width)
        scores[span] = gemm_dataflow(p, a, kt_host, [])

    probs = [0] * (rows * width)
    for first, count in softmax.row_runs(m):
        if count == 0:
            continue
        offset, sizes, strides = softmax.row_access(first, count, n, width)
        positions = gather(gemm.Access((rows, width), offset, sizes, strides), range(rows * width))
        write_words(paths["x"], [scores[i] for i in positions])
        run(harness, "softmax", paths["x"], paths["y"], n)
        for i, v in zip(positions, read_words(paths["y"])):
            probs[i] = v

    out = []
    p = gemm.plan(dev, pv.m_chunk, width, pv.n_pad)
    for i in range(pv.dispatches):
        a = [w >> 16 for w in probs[i * pv.m_chunk * width:(i + 1) * pv.m_chunk * width]]
        C = gemm_dataflow(p, a, v_host, [])
        for r in range(min(pv.m_chunk, m - i * pv.m_chunk)):
            out += C[r * pv.n_pad:r * pv.n_pad + dv]
    name = (f"attention head {m}x{d} keys {n} values {dv}: {qk.dispatches} + 1 + "
            f"{pv.dispatches} dispatches, scores {width} wide ({dev})")
    return same(name, list(range(m * dv)), out, read_words(paths["r"]))


ok = check_gelu() & check_softmax()
# N in whole column blocks of the device's array (128 columns on npu, 256 on npu2).
block = 32 * gemm.COLUMNS[dev]
ok &= check_gemm(256, 64, block, "none")
ok &= check_gemm(512, 192, 3 * block, "bias")
ok &= check_gemm(256, 128, 3 * block, "bias_gelu")
ok &= check_gemm(256, 64, 4608, "bias")  # 36 or 18 column tiles: the bias spans B objects
ok &= check_gemm(512, 128, 2 * block, "none", "bf16")
# Groups of row blocks (no epilogue, B the larger share): 6 row blocks in groups of 4 and 2,
# one column tile; and 65 k-tiles, more than one shim task's repeat, in a group of 2.
ok &= check_gemm(1536, 192, block, "none")
ok &= check_gemm(512, 4160, block, "none")
# Scores 2176 wide: P V runs in two 256-row dispatches (the second past the 512 padded rows'
# need: 300 rows), the softmax reads rows of 2100 in three pieces, values padded 40 -> 128.
ok &= check_attention(300, 64, 2100, 40)
# Every GEMM dispatch of every Whisper size on this device, through the one design of its
# kind with the shape's runtime parameters: each (K, N, epilogue, output) once, with M cut to
# one row block of 256 rows (its k-tiles, column tiles and bias parts are the dispatch's own;
# the row blocks of a dispatch repeat one pattern, checked above with several), and one head
# of attention at Whisper's own size (1500 positions, 64 values a head, every size).
# bf16x3 (kernels/NUMERICS.md 7) runs the same kernels over operands the host expands, K
# three times as long: its new runtime parameters are k-tile counts, checked on tiny's and
# base's shapes and at the largest count of any size (large-v3's FFN down-projection under
# bf16x3: 5120 x 3 = 15360, 240 k-tiles) on one column block. bf16-host (7.4) adds the
# float32 output of attention's scores and P V's K padded as any product's, on tiny and base.
seen = set()
sizes = ("tiny", "base", "small", "medium", "large-v2", "large-v3")
runs = [(model, "bf16") for model in sizes] + [
    (model, precision) for precision in ("bf16x3", "bf16-host") for model in ("tiny", "base")
]
for model, precision in runs:
    for kernel in whisper_kernels(model, precision):
        if kernel["kind"] != "gemm":
            continue
        M, K, N = kernel["shape"]
        key = (K, N, kernel["epilogue"], kernel["output"])
        if key in seen:
            continue
        seen.add(key)
        ok &= check_gemm(gemm.ROWS * 64, K, N, kernel["epilogue"], kernel["output"],
                         f": {model}'s {kernel['name']} ({precision}), one row block of its {M}")
ok &= check_attention(1500, 64, 1500, 64)
ok &= check_gemm(gemm.ROWS * 64, 15360, block, "bias", "f32", ": 240 k-tiles (bf16x3, large)")
print(f"the shims' bytes equal GemmContract::dataflow's in all {len(DMA_CHECKED)} GEMM dispatches "
      f"({GROUPED.count('columns')} in groups of column tiles, {GROUPED.count('rows')} of row blocks)")
if "rows" not in GROUPED or "columns" not in GROUPED:
    print("the checks did not run both kinds of group")
    ok = False
print("all kernels agree with the emulator" if ok else "DIFFERENCES FOUND")
sys.exit(0 if ok else 1)
