# The whole-array GEMM of the kernel contract as an IRON design (mlir-aie): one xclbin per
# epilogue and output type, one instruction stream per dispatch shape.
#
# Usage: python3 gemm.py --dev npu -M 1536 -K 512 -N 512 --epilogue bias > aie.mlir
#        python3 gemm.py --dev npu -M 1536 -K 64 -N 1536 --output bf16 > aie.mlir
#
# The array's part of the MLIR (cores, object FIFOs, kernels) is the same for every shape of
# a kind: the cores read their loop counts from runtime parameters that the runtime sequence
# (the instruction stream) writes. build.sh builds the xclbin once per kind and only the
# instruction stream for the other shapes, after checking that their array parts agree.
#
# After mlir-aie's programming_examples/basic/matrix_multiplication/whole_array
# (whole_array_iron.py): 4 x 4 compute cores, one memory tile and one shim tile per column,
# A broadcast along core rows, B along core columns, C joined per column in the memory tile.
# Written anew for this contract; see kernels/aie/README.md for what differs and why.
"""Whole-array GEMM of kernels/src/gemm.rs on XDNA: one dispatch of C = A @ B (+ epilogue).

The shape is one dispatch of ``GemmContract::layout``: ``M = m_chunk`` rows of A (a multiple
of 4 x 64), ``K = k_pad`` (a multiple of 64), ``N = n_pad`` (a multiple of 4 x 32). The host
buffers, in the order of the runtime sequence (XRT kernel arguments 3, 4, 5, 6), are:

- A: bfloat16 ``[M, K]`` row-major;
- B: bfloat16 ``[K, N]`` row-major;
- C: float32 ``[M, N]`` row-major (bfloat16 with ``--output bf16``);
- bias: float32 ``[N]``, only with the epilogues ``bias`` and ``bias_gelu``.

``--output bf16`` (attention's scores, left on the device for the softmax) builds against
``gemm_bf16.o`` (gemm.cc with ``GEMM_OUTPUT_BF16`` and ``GEMM_BIAS=0``): a core keeps its
group's float32 tiles in its own memory across the k-tiles and stores them rounded to
bfloat16 into the C objects; there is no epilogue.

The shape reaches the cores as 13 runtime parameters (``Plan.rtp``: row blocks, k-tiles,
bias parts, column tiles, then the counts of groups of each size), written into each core's
parameter buffer by the runtime sequence before it releases the core's barrier; nothing else
in the cores depends on the shape.

Core ``(row r, column c)`` owns, for each row block ``b`` (256 rows) and each column tile
``j`` of its column, the 64 x 32 tile of C at rows ``b * 256 + r * 64``, columns
``(j * columns + c) * 32``. It computes them in groups (``GROUP``): up to four column tiles
(three with bfloat16 C) of a row block, each k-tile of A serving them all, or, for a dispatch
without an epilogue whose B is the larger share, up to four row blocks of a column tile, each
k-tile of B serving them all (``Plan.rows_grouped``). For each tile of a group it zeroes the tile, adds the partial
sums of the K / 64 k-tiles in increasing order (``gemm_ktile_bf16_f32``), applies the
epilogue and hands the tile to its column's memory tile. A reaches the cores in 64 x 64 tiles through the memory tile of the
core row's column (broadcast to the 4 cores of the row); B in 64 x 32 tiles through the
memory tile of the core column (broadcast to its 4 cores); the bias of a column travels down
its B stream ahead of the first B tile (see ``gemm_bias_load`` in gemm.cc).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass

ROWS = 4
# Core columns of the whole array per device: 4 on XDNA1 (npu1_4col), 8 on XDNA2 (npu2),
# GemmContract::XDNA1 and ::XDNA2 of kernels/src/gemm.rs.
COLUMNS = {"npu": 4, "npu2": 8}
# The bfloat16 mmul shape per device: mm.cc's 4 x 8 x 4 on AIE2 (XDNA1), 4 x 8 x 8 on AIE2P
# (XDNA2). mlir-aie's whole-array design lists 8 x 8 x 8 for AIE2P bfloat16 too, but that
# shape emulates bfloat16 with block floating point (other numerics than the contract's).
MMUL_SHAPES = {"npu": (4, 8, 4), "npu2": (4, 8, 8)}
EPILOGUES = ("none", "bias", "bias_gelu")
# Output tiles a core accumulates at once, each k-tile of A serving them all (kernels/src/gemm.rs
# GROUP, GROUP_BF16): four float32 C tiles fit a core's memory beside double-buffered A and B,
# the bias stash and the stack; the bfloat16-output kernel holds three float32 accumulator
# tiles of its own and three bfloat16 C objects (gemm.cc's GEMM_GROUP_BF16).
GROUP = {"f32": 4, "bf16": 3}
# Runtime parameters of a core: row blocks, k-tiles per tile, bias parts, column tiles (of the
# bias), then for each group size from 4 down to 1 the groups of column tiles of that size a
# row block has, the groups of row blocks of that size a dispatch has, and the column tiles
# the groups of row blocks sweep. A dispatch uses one kind of group: the other's counts are 0.
RTP_WORDS = 4 + 4 + 4 + 1
OUTPUTS = ("f32", "bf16")
OBJECT_FILE = "gemm.o"
OBJECT_FILE_BF16 = "gemm_bf16.o"
# The bias stash of gemm.cc holds N / 4 floats for N up to this (GEMM_MAX_N_PAD); 5120 is
# Whisper large's FFN width, the largest N of any encoder product.
MAX_N_PAD = 5120
CORE_MEMORY_BYTES = 64 * 1024
CORE_STACK_BYTES = 1024
# Shim DMA limits (AIE-ML buffer descriptors): wrap sizes of the three inner dimensions,
# and the repeat count of the outermost one.
MAX_WRAP = 1023
MAX_REPEAT = 64
# Tasks the runtime sequence keeps queued on one shim DMA channel at most: the channel's task
# queue, four deep on AIE-ML, and a push onto a full one is dropped, not stalled (measured on
# devices: mlir-aie pull request 3734 on Strix, mlir-air pull request 1826 on AIE2; newer
# mlir-aie polls for room before each push itself). hostcheck/iron_model holds every design
# to it.
MAX_QUEUED_TASKS = 4


@dataclass(frozen=True)
class Access:
    """A runtime DMA access pattern over a host tensor, outermost dimension first, in elements."""

    tensor: tuple[int, int]
    offset: int
    sizes: tuple[int, int, int, int]
    strides: tuple[int, int, int, int]


@dataclass(frozen=True)
class Plan:
    """Everything about one dispatch shape that does not need mlir-aie: the counts, the
    memory tiles' transforms and the runtime access patterns (hostcheck/check_kernels.py
    replays them)."""

    dev: str
    M: int
    K: int
    N: int
    m: int
    k: int
    n: int
    epilogue: str
    mmul: tuple[int, int, int]
    output: str = "f32"

    @property
    def c_bytes(self) -> int:
        """Bytes of one value of C."""
        return 2 if self.output == "bf16" else 4

    @property
    def columns(self) -> int:
        """Core columns of the device's whole array."""
        return COLUMNS[self.dev]

    @property
    def row_blocks(self) -> int:
        return self.M // (ROWS * self.m)

    @property
    def col_tiles(self) -> int:
        """Output tiles of one core per row block (column tiles of its array column)."""
        return self.N // (self.columns * self.n)

    @property
    def k_tiles(self) -> int:
        return self.K // self.k

    @property
    def tiles_per_core(self) -> int:
        return self.row_blocks * self.col_tiles

    @property
    def group(self) -> int:
        """Output tiles a core accumulates at once (GROUP)."""
        return GROUP[self.output]

    def groups(self) -> list[tuple[int, int]]:
        """The groups of column tiles of one row block: (first column tile, size), full
        groups of ``group`` column tiles, then the rest as one smaller group."""
        g = self.group
        return [(j, min(g, self.col_tiles - j)) for j in range(0, self.col_tiles, g)]

    def row_groups(self) -> list[tuple[int, int]]:
        """The groups of row blocks of the dispatch: (first row block, size)."""
        g = self.group
        return [(b, min(g, self.row_blocks - b)) for b in range(0, self.row_blocks, g)]

    @property
    def rows_grouped(self) -> bool:
        """Whether the dispatch groups row blocks (each k-tile of B serving a core's tiles of
        one column tile in several row blocks) rather than column tiles: only without an
        epilogue (the bias walks its column tiles in order), and only when that reads fewer
        bytes of A and B (kernels/src/gemm.rs chooses the same; the hostcheck holds the two
        byte counts equal)."""
        if self.epilogue != "none" or self.output != "f32":
            return False
        a, b = self.M * self.K, self.K * self.N
        by_columns = a * len(self.groups()) + b * self.row_blocks
        by_rows = a * self.col_tiles + b * len(self.row_groups())
        return by_rows < by_columns

    def units(self) -> list[tuple[int, int, int, int]]:
        """The runtime sequence's units, in order, each one task group: (first row block,
        row blocks, first column tile, column tiles)."""
        if self.rows_grouped:
            return [(b, rows, j, 1) for b, rows in self.row_groups()
                    for j in range(self.col_tiles)]
        return [(b, 1, j, cols) for b in range(self.row_blocks) for j, cols in self.groups()]

    def group_counts(self) -> list[int]:
        """RTP words 4 to 12: groups of column tiles of each size (4 down to 1) a row block
        has, groups of row blocks of each size a dispatch has, the column tiles those sweep."""
        def counts(sizes):
            return [sizes.count(g) for g in range(4, 0, -1)]
        if self.rows_grouped:
            rows = counts([size for _, size in self.row_groups()])
            return [0] * 4 + rows + [self.col_tiles]
        return counts([size for _, size in self.groups()]) + [0] * 4 + [0]

    @property
    def has_bias(self) -> bool:
        return self.epilogue != "none"

    @property
    def bias_units(self) -> int:
        """bfloat16-sized units of one column's bias slice (two per float)."""
        return self.col_tiles * 2 * self.n

    @property
    def bias_repeats(self) -> int:
        """How many times the column's slice is sent so that it fills whole B objects."""
        return (self.k * self.n) // math.gcd(self.bias_units, self.k * self.n)

    @property
    def bias_parts(self) -> int:
        """B objects the bias of a column occupies at the head of the B stream."""
        return self.bias_units // math.gcd(self.bias_units, self.k * self.n)

    # Data layout transforms of the memory tiles' DMAs (dims_to_stream, (size, stride) from
    # the outermost dimension), the same as whole_array's: A into r x s blocks and B into
    # s x t blocks on the way to the cores, C from r x t blocks back to row-major on the way
    # to the host.
    @property
    def a_to_core(self) -> list[tuple[int, int]]:
        r, s, _ = self.mmul
        return [(self.m // r, r * self.k), (self.k // s, s), (r, self.k), (s, 1)]

    @property
    def b_to_core(self) -> list[tuple[int, int]]:
        _, s, t = self.mmul
        return [(self.k // s, s * self.n), (self.n // t, t), (s, self.n), (t, 1)]

    @property
    def c_to_host(self) -> list[tuple[int, int]]:
        r, _, t = self.mmul
        return [(self.m // r, r * self.n), (r, t), (self.n // t, r * t), (t, 1)]

    def a_tasks(self, block: int, blocks: int, row: int) -> list[Access]:
        """A for core row ``row`` in the unit of ``blocks`` row blocks from ``block``: for
        each k-tile, the row's m rows of each row block in turn, as the core takes them (one
        row block: its k-tiles once, the core using each for every tile of its group of
        column tiles). The k-tiles are the outermost (repeat) dimension of a task with several
        row blocks, at most MAX_REPEAT a task."""
        first_row = block * ROWS * self.m + row * self.m
        if blocks == 1:
            return [Access((self.M, self.K), first_row * self.K,
                           (1, self.k_tiles, self.m, self.k), (0, self.k, self.K, 1))]
        return [
            Access(
                (self.M, self.K),
                first_row * self.K + k0 * self.k,
                (min(MAX_REPEAT, self.k_tiles - k0), blocks, self.m, self.k),
                (self.k, ROWS * self.m * self.K, self.K, 1),
            )
            for k0 in range(0, self.k_tiles, MAX_REPEAT)
        ]

    def b_access(self, col: int, first: int, size: int, k_first: int, k_count: int) -> Access:
        """B for core column ``col`` and the group of ``size`` column tiles from ``first``
        (column tiles ``j * columns + col``), k-tiles ``k_first`` to ``k_first + k_count``:
        for each k-tile, the group's tiles in turn, as the core takes them. The k-tiles are
        the outermost (repeat) dimension, at most MAX_REPEAT a task: ``b_tasks`` cuts them."""
        return Access(
            (self.K, self.N),
            k_first * self.k * self.N + (first * self.columns + col) * self.n,
            (k_count, size, self.k, self.n),
            (self.k * self.N, self.columns * self.n, self.N, 1),
        )

    def b_tasks(self, col: int, first: int, size: int) -> list[Access]:
        """The shim tasks of B for one group: its k-tiles cut into runs of MAX_REPEAT."""
        return [
            self.b_access(col, first, size, k0, min(MAX_REPEAT, self.k_tiles - k0))
            for k0 in range(0, self.k_tiles, MAX_REPEAT)
        ]

    def c_access(self, block: int, blocks: int, col: int, first: int, size: int) -> Access:
        """C from column ``col``'s memory tile for the unit of ``blocks`` row blocks from
        ``block`` and ``size`` column tiles from ``first`` (one of the two is 1): one 4m x n
        tile per row block or column tile, in the order the cores release them."""
        offset = block * ROWS * self.m * self.N + (first * self.columns + col) * self.n
        if blocks > 1:
            return Access((self.M, self.N), offset, (1, blocks, ROWS * self.m, self.n),
                          (0, ROWS * self.m * self.N, self.N, 1))
        return Access(
            (self.M, self.N),
            offset,
            (1, size, ROWS * self.m, self.n),
            (0, self.columns * self.n, self.N, 1),
        )

    def units_in_flight(self) -> int:
        """Units the runtime sequence keeps in flight: two, or one where two would queue more
        than MAX_QUEUED_TASKS tasks on one shim channel."""
        most = max(
            max(len(self.a_tasks(b, rows, 0)), len(self.b_tasks(0, j, cols)))
            for b, rows, j, cols in self.units()
        )
        return 2 if 2 * most <= MAX_QUEUED_TASKS else 1

    def dma_bytes(self) -> dict[str, int]:
        """Bytes the runtime sequence's shim tasks move in one dispatch, counted from the
        access patterns themselves (kernels/src/gemm.rs Dataflow must give the same)."""
        def count(access: Access) -> int:
            return math.prod(access.sizes)
        a = b = c = bias = 0
        for block, blocks, first, size in self.units():
            for row in range(ROWS):
                a += sum(count(t) for t in self.a_tasks(block, blocks, row))
            for col in range(self.columns):
                b += sum(count(t) for t in self.b_tasks(col, first, size))
                c += count(self.c_access(block, blocks, col, first, size))
        if self.has_bias:
            bias = sum(count(self.bias_access(col)) for col in range(self.columns))
        return {"a": 2 * a, "b": 2 * b, "bias": 2 * bias, "c": self.c_bytes * c}

    def bias_access(self, col: int) -> Access:
        """The bias of core column ``col``, the float32 [N] seen as 2N bfloat16 halves: its
        column tiles in turn, the slice repeated to fill ``bias_parts`` whole B objects."""
        return Access(
            (1, 2 * self.N),
            2 * self.n * col,
            (self.bias_repeats, 1, self.col_tiles, 2 * self.n),
            (0, 0, 2 * self.columns * self.n, 1),
        )

    def rtp(self) -> list[int]:
        """The runtime parameters of one dispatch, as every core reads them: its row blocks
        (0 with groups of row blocks), the k-tiles of each output tile, the B objects the bias
        occupies and the column tiles (0 and 0 without a bias), then ``group_counts``. They
        are all the shape a core sees; everything else of the dispatch is in the runtime
        sequence's access patterns (the instruction stream)."""
        head = [0 if self.rows_grouped else self.row_blocks, self.k_tiles]
        head += [self.bias_parts, self.col_tiles] if self.has_bias else [0, 0]
        words = head + self.group_counts()
        assert len(words) == RTP_WORDS
        return words

    def kind(self) -> str:
        """The xclbin this dispatch runs in: one per epilogue and output type (and device),
        whatever the shape."""
        return f"gemm_{self.epilogue}_{self.output}"

    @property
    def c_depth(self) -> int:
        """C objects of a core: its group's (held at once), at least two."""
        return max(2, self.group)

    def core_bytes(self) -> int:
        """Data memory of one core: double-buffered A and B tiles, the C objects, gemm.cc's
        bias stash and bias lanes, the stack."""
        a = 2 * self.m * self.k * 2
        b = 2 * self.k * self.n * 2
        c = self.c_depth * self.m * self.n * self.c_bytes
        if self.output == "bf16":
            # gemm_bf16.o: the group's float32 accumulator tiles; no bias stash.
            return a + b + c + self.group * self.m * self.n * 4 + CORE_STACK_BYTES
        stash = MAX_N_PAD // self.columns * 4 + (self.n // self.mmul[2]) * 16 * 4
        return a + b + c + stash + CORE_STACK_BYTES


def plan(
    dev: str,
    M: int,
    K: int,
    N: int,
    m: int = 64,
    k: int = 64,
    n: int = 32,
    epilogue: str = "none",
    output: str = "f32",
) -> Plan:
    """Checks a dispatch shape against the design's limits and returns its plan."""
    if dev not in MMUL_SHAPES:
        raise ValueError(f"unknown device {dev!r}; expected one of {sorted(MMUL_SHAPES)}")
    if epilogue not in EPILOGUES:
        raise ValueError(f"unknown epilogue {epilogue!r}; expected one of {EPILOGUES}")
    if output not in OUTPUTS:
        raise ValueError(f"unknown output {output!r}; expected one of {OUTPUTS}")
    r, s, t = MMUL_SHAPES[dev]
    p = Plan(dev, M, K, N, m, k, n, epilogue, (r, s, t), output)
    problems = []
    if output == "bf16" and epilogue != "none":
        problems.append("the bfloat16-output GEMM has no epilogue")
    if M <= 0 or M % (ROWS * m):
        problems.append(f"M = {M} is not a positive multiple of {ROWS} x m = {ROWS * m}")
    if K <= 0 or K % k:
        problems.append(f"K = {K} is not a positive multiple of k = {k}")
    columns = p.columns
    if N <= 0 or N % (columns * n):
        problems.append(f"N = {N} is not a positive multiple of {columns} x n = {columns * n}")
    if m % (2 * r) or n % (2 * t) or k % s:
        problems.append(
            f"the tile {m}x{k}x{n} is not made of 2 x 2 blocks of the {r}x{s}x{t} mmul"
        )
    if p.has_bias and N > MAX_N_PAD:
        problems.append(f"N = {N} exceeds the bias stash of gemm.cc (N <= {MAX_N_PAD})")
    if p.bias_repeats > MAX_REPEAT:
        problems.append(f"N = {N} needs more than {MAX_REPEAT} repeats of the bias's transfer")
    if p.k_tiles > MAX_QUEUED_TASKS * MAX_REPEAT:
        problems.append(f"K = {K}: one unit's B would queue more than {MAX_QUEUED_TASKS} tasks")
    if p.k_tiles > MAX_WRAP or ROWS * m > MAX_WRAP:
        problems.append(f"K = {K} or m = {m} exceeds a shim DMA dimension ({MAX_WRAP})")
    if p.core_bytes() > CORE_MEMORY_BYTES:
        problems.append(f"a core needs {p.core_bytes()} bytes of its {CORE_MEMORY_BYTES}")
    if problems:
        raise ValueError("; ".join(problems))
    return p


def design(p: Plan):
    """The IRON program of plan ``p``, resolved to an MLIR module."""
    # mlir-aie is imported here, so that the rest of this file works without it.
    import numpy as np
    from ml_dtypes import bfloat16

    from aie.helpers.taplib import TensorAccessPattern
    from aie.iron import (
        Buffer,
        Kernel,
        ObjectFifo,
        Program,
        Runtime,
        Worker,
        WorkerRuntimeBarrier,
    )
    from aie.iron.controlflow import range_
    from aie.iron.device import NPU1Col4, NPU2, Tile
    from aie.iron.placers import SequentialPlacer

    M, K, N, m, k, n = p.M, p.K, p.N, p.m, p.k, p.n

    def tap(a):
        return TensorAccessPattern(a.tensor, a.offset, list(a.sizes), list(a.strides))

    A_ty = np.ndarray[(M * K,), np.dtype[bfloat16]]
    B_ty = np.ndarray[(K * N,), np.dtype[bfloat16]]
    c_dtype = bfloat16 if p.output == "bf16" else np.float32
    C_ty = np.ndarray[(M * N,), np.dtype[c_dtype]]
    bias_ty = np.ndarray[(2 * N,), np.dtype[bfloat16]]
    A_l2_ty = np.ndarray[(m * k,), np.dtype[bfloat16]]
    B_l2_ty = np.ndarray[(k * n,), np.dtype[bfloat16]]
    C_l2_ty = np.ndarray[(ROWS * m * n,), np.dtype[c_dtype]]
    A_l1_ty = np.ndarray[(m, k), np.dtype[bfloat16]]
    B_l1_ty = np.ndarray[(k, n), np.dtype[bfloat16]]
    C_l1_ty = np.ndarray[(m, n), np.dtype[c_dtype]]

    if p.output == "bf16":
        zero = Kernel("gemm_acc_zero", OBJECT_FILE_BF16, [np.int32])
        ktile = Kernel("gemm_acc_ktile", OBJECT_FILE_BF16, [A_l1_ty, B_l1_ty, np.int32])
        extra = [Kernel("gemm_acc_store_bf16", OBJECT_FILE_BF16, [C_l1_ty, np.int32])]
    else:
        zero = Kernel("gemm_zero_f32", OBJECT_FILE, [C_l1_ty])
        ktile = Kernel("gemm_ktile_bf16_f32", OBJECT_FILE, [A_l1_ty, B_l1_ty, C_l1_ty])
        extra = []
    if p.has_bias:
        extra = [
            Kernel("gemm_bias_begin", OBJECT_FILE, [np.int32]),
            Kernel("gemm_bias_load", OBJECT_FILE, [B_l1_ty]),
            Kernel(f"gemm_epilogue_{p.epilogue}", OBJECT_FILE, [C_l1_ty]),
        ]

    # A: shim `row` -> memory tile `row` -> the 4 cores of core row `row`.
    a_l3l2, a_l2l1 = [], []
    for row in range(ROWS):
        fifo = ObjectFifo(A_l2_ty, name=f"A_L3L2_{row}")
        a_l3l2.append(fifo)
        a_l2l1.append(
            fifo.cons().forward(
                placement=Tile(row, 1),
                obj_type=A_l1_ty,
                name=f"A_L2L1_{row}",
                dims_to_stream=p.a_to_core,
            )
        )

    # B (and the bias ahead of it): shim `col` -> memory tile `col` -> the 4 cores of column
    # `col`. C: the 4 cores of column `col` -> memory tile `col` (joined) -> shim `col`.
    b_l3l2, b_l2l1, c_l2l3 = [], [], []
    columns = p.columns
    c_l1l2 = [[None] * columns for _ in range(ROWS)]
    for col in range(columns):
        fifo = ObjectFifo(B_l2_ty, name=f"B_L3L2_{col}")
        b_l3l2.append(fifo)
        b_l2l1.append(
            fifo.cons().forward(
                placement=Tile(col, 1),
                obj_type=B_l1_ty,
                name=f"B_L2L1_{col}",
                dims_to_stream=p.b_to_core,
            )
        )
        out = ObjectFifo(C_l2_ty, name=f"C_L2L3_{col}", dims_to_stream=p.c_to_host)
        c_l2l3.append(out)
        parts = out.prod().join(
            [m * n * row for row in range(ROWS)],
            placement=Tile(col, 1),
            obj_types=[C_l1_ty] * ROWS,
            names=[f"C_L1L2_{col}_{row}" for row in range(ROWS)],
            depths=[p.c_depth] * ROWS,
        )
        for row in range(ROWS):
            c_l1l2[row][col] = parts[row]

    # The shape reaches the cores as runtime parameters (RTP), written by the runtime
    # sequence of each dispatch before it releases the cores' barriers: one xclbin serves
    # every shape of its kind, each shape is its own instruction stream (mlir-aie's
    # programming_examples/basic/matrix_multiplication/rtp does the same). Each worker loops
    # forever (IRON's Worker), one iteration a dispatch.
    rtps = [
        [
            Buffer(
                np.ndarray[(RTP_WORDS,), np.dtype[np.int32]],
                name=f"rtp_{row}_{col}",
                initial_value=np.zeros(RTP_WORDS, dtype=np.int32),
                use_write_rtp=True,
            )
            for col in range(columns)
        ]
        for row in range(ROWS)
    ]
    barriers = [[WorkerRuntimeBarrier() for _ in range(columns)] for _ in range(ROWS)]

    def rearm(barrier):
        # The wait is an acquire-equal, which leaves the lock at 1: moved off it here, the
        # next dispatch's wait blocks until that dispatch has written its parameters and set
        # the barrier again, instead of passing at once and reading these. Safe before the
        # work: the next dispatch cannot begin until this one's C has drained.
        barrier.release_with_value(1)

    def core_fn_bf16(a_in, b_in, c_out, rtp, barrier, zero, ktile, store):
        # A group's tiles are accumulated in the core's own float32 tiles (gemm.cc's
        # acc_tiles, by index), then stored rounded into the group's C objects.
        barrier.wait_for_value(1)
        rearm(barrier)
        row_blocks, k_tiles = rtp[0], rtp[1]
        for _ in range_(row_blocks):
            for size in range(GROUP["bf16"], 0, -1):
                for _ in range_(rtp[8 - size]):
                    for t in range(size):
                        zero(t)
                    for _ in range_(k_tiles):
                        a = a_in.acquire(1)
                        for t in range(size):
                            b = b_in.acquire(1)
                            ktile(a, b, t)
                            b_in.release(1)
                        a_in.release(1)
                    held = c_out.acquire(size)
                    tiles = [held[i] for i in range(size)] if size > 1 else [held]
                    for t, c in enumerate(tiles):
                        store(c, t)
                    c_out.release(size)

    def core_fn(a_in, b_in, c_out, rtp, barrier, zero, ktile, bias_begin=None, bias_load=None,
                finish=None):
        barrier.wait_for_value(1)
        rearm(barrier)
        row_blocks, k_tiles = rtp[0], rtp[1]
        if bias_load is not None:
            bias_parts, col_tiles = rtp[2], rtp[3]
            bias_begin(col_tiles)
            for _ in range_(bias_parts):
                head = b_in.acquire(1)
                bias_load(head)
                b_in.release(1)
        def group(size, shared, streamed, shared_is_a):
            # `size` output tiles at once; each k-tile of the shared operand serves them all,
            # the streamed operand's tiles arriving in turn.
            held = c_out.acquire(size)
            tiles = [held[i] for i in range(size)] if size > 1 else [held]
            for c in tiles:
                zero(c)
            for _ in range_(k_tiles):
                s = shared.acquire(1)
                for c in tiles:
                    t = streamed.acquire(1)
                    if shared_is_a:
                        ktile(s, t, c)
                    else:
                        ktile(t, s, c)
                    streamed.release(1)
                shared.release(1)
            if finish is not None:
                for c in tiles:
                    finish(c)
            c_out.release(size)

        for _ in range_(row_blocks):
            # Groups of GROUP["f32"] column tiles, then the smaller group of the rest: the
            # loop of each size runs as many times as the runtime parameter of its size says.
            for size in range(GROUP["f32"], 0, -1):
                for _ in range_(rtp[8 - size]):
                    group(size, a_in, b_in, True)
        # Groups of row blocks (a dispatch without an epilogue whose B is the larger share):
        # for each group and each column tile, the core's tiles of that column tile in the
        # group's row blocks, each k-tile of B serving them all, A's tiles arriving in turn.
        for size in range(GROUP["f32"], 0, -1):
            for _ in range_(rtp[12 - size]):
                for _ in range_(rtp[12]):
                    group(size, b_in, a_in, False)

    workers = [
        Worker(
            core_fn_bf16 if p.output == "bf16" else core_fn,
            [
                a_l2l1[row].cons(),
                b_l2l1[col].cons(),
                c_l1l2[row][col].prod(),
                rtps[row][col],
                barriers[row][col],
                zero,
                ktile,
                *extra,
            ],
            placement=Tile(col, 2 + row),
        )
        for row in range(ROWS)
        for col in range(columns)
    ]

    a_fills = [fifo.prod() for fifo in a_l3l2]
    b_fills = [fifo.prod() for fifo in b_l3l2]
    c_drains = [fifo.cons() for fifo in c_l2l3]
    rt = Runtime()
    types = [A_ty, B_ty, C_ty] + ([bias_ty] if p.has_bias else [])
    with rt.sequence(*types) as buffers:
        A, B, C = buffers[:3]
        rt.start(*workers)
        values = p.rtp()

        def set_rtps(*buffers):
            for buffer in buffers:
                for i, value in enumerate(values):
                    buffer[i] = value

        rt.inline_ops(set_rtps, [rtp for row in rtps for rtp in row])
        for row in barriers:
            for barrier in row:
                rt.set_barrier(barrier, 1)
        if p.has_bias:
            # The bias first, awaited (the cores take it before anything else), so that its
            # task has left B's queue before the units' tasks fill it.
            bias_group = rt.task_group()
            for col in range(columns):
                rt.fill(
                    b_fills[col],
                    buffers[3],
                    tap=tap(p.bias_access(col)),
                    task_group=bias_group,
                    wait=True,
                    placement=Tile(col, 0),
                )
            rt.finish_task_group(bias_group)
        # One task group per unit (a group of column tiles in a row block, or a column tile in
        # a group of row blocks), `in_flight` of them at once: before issuing one, the one
        # `in_flight` before is awaited (its C drained) and its buffer descriptors freed. A
        # unit queues ceil(k-tiles / 64) tasks on a B channel (and on an A channel with groups
        # of row blocks): two units in flight while that keeps a channel's queue within
        # MAX_QUEUED_TASKS, else one.
        in_flight = p.units_in_flight()
        groups = [None] * in_flight
        for unit, (block, blocks, first, size) in enumerate(p.units()):
            slot = unit % in_flight
            if groups[slot] is not None:
                rt.finish_task_group(groups[slot])
            group = groups[slot] = rt.task_group()
            for col in range(columns):
                rt.drain(
                    c_drains[col],
                    C,
                    tap=tap(p.c_access(block, blocks, col, first, size)),
                    wait=True,
                    task_group=group,
                    placement=Tile(col, 0),
                )
                # Shims 0 to ROWS - 1 also carry the A of the core row of their number.
                fills = [(b_fills[col], B, p.b_tasks(col, first, size))]
                if col < ROWS:
                    fills.insert(0, (a_fills[col], A, p.a_tasks(block, blocks, col)))
                for handle, source, tasks in fills:
                    for task in tasks:
                        rt.fill(
                            handle,
                            source,
                            tap=tap(task),
                            task_group=group,
                            placement=Tile(col, 0),
                        )
        for group in groups:
            if group is not None:
                rt.finish_task_group(group)

    device = NPU1Col4() if p.dev == "npu" else NPU2()
    return Program(device, rt).resolve_program(SequentialPlacer())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dev", choices=sorted(MMUL_SHAPES), default="npu")
    parser.add_argument("-M", type=int, required=True, help="rows of A in one dispatch")
    parser.add_argument("-K", type=int, required=True, help="padded reduction length")
    parser.add_argument("-N", type=int, required=True, help="padded columns of B")
    # The per-core tile must match the DIM_M, DIM_K, DIM_N that gemm.o was compiled with.
    parser.add_argument("-m", type=int, default=64, help="rows of a core's tile")
    parser.add_argument("-k", type=int, default=64, help="the k-tile")
    parser.add_argument("-n", type=int, default=32, help="columns of a core's tile")
    parser.add_argument("--epilogue", choices=EPILOGUES, default="none")
    parser.add_argument(
        "--output", choices=OUTPUTS, default="f32", help="the type C is written in"
    )
    parser.add_argument(
        "--plan", action="store_true", help="print the plan as JSON instead of MLIR"
    )
    args = parser.parse_args()
    try:
        p = plan(
            args.dev,
            args.M,
            args.K,
            args.N,
            args.m,
            args.k,
            args.n,
            args.epilogue,
            args.output,
        )
    except ValueError as e:
        sys.exit(f"gemm.py: {e}")
    if args.plan:
        print(
            json.dumps(
                {
                    **asdict(p),
                    "row_blocks": p.row_blocks,
                    "col_tiles": p.col_tiles,
                    "k_tiles": p.k_tiles,
                    "bias_parts": p.bias_parts if p.has_bias else 0,
                    "core_bytes": p.core_bytes(),
                    "group": p.group,
                    "rows_grouped": p.rows_grouped,
                    "dma_bytes": p.dma_bytes(),
                    "kind": p.kind(),
                    "rtp": p.rtp(),
                }
            )
        )
        return
    print(design(p))


if __name__ == "__main__":
    main()
