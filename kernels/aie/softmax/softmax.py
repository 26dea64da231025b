# Row-wise softmax of the kernel contract as an IRON design (mlir-aie), one dispatch.
#
# Usage: python3 softmax.py --dev npu --rows 343 --cols 1500 > aie.mlir
#        python3 softmax.py --dev npu --rows 1500 --cols 1500 --stride 1536 > aie.mlir
#
# After mlir-aie's programming_examples/ml/softmax (softmax.py) and ml/gelu (gelu.py):
# workers fed straight from shim DMA channels through object FIFOs. Written anew.
"""Row-wise softmax of kernels/src/softmax.rs on XDNA: one dispatch of ``rows x cols``.

The host buffers, in the order of the runtime sequence (XRT kernel arguments 3 and 4), are
the input and the output, bfloat16 ``[rows, stride]`` row-major; the softmax reads and
writes the first ``cols`` values of each row (``stride = cols`` by default: rows back to back
with no padding). With ``stride > cols`` (attention's scores, as wide as the GEMM's padded
N), the shim DMAs skip the padding, and the output's padding is never written: the host
fills it with zeros once, and the next product reads those zeros. The rows are cut into 8
contiguous runs, one per worker (two cores in each of the four columns, each fed by its own
shim DMA channel in and out), as evenly as possible; a worker takes its rows one object
(one row) at a time and calls ``softmax_row_bf16``, which handles any ``cols`` (the last
partial 16-lane vector of a row included).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "common"))
from streaming import stream_program  # noqa: E402

COLUMNS = 4
WORKERS_PER_COLUMN = 2  # the shim tile's two input and two output DMA channels
WORKERS = COLUMNS * WORKERS_PER_COLUMN
OBJECT_FILE = "softmax.o"
CORE_MEMORY_BYTES = 64 * 1024
CORE_STACK_BYTES = 1024


def row_runs(rows: int, workers: int = WORKERS) -> list[tuple[int, int]]:
    """``(first row, row count)`` of each worker; the first ``rows % workers`` take one more."""
    runs, first = [], 0
    for w in range(workers):
        count = rows // workers + (1 if w < rows % workers else 0)
        runs.append((first, count))
        first += count
    return runs


# Shim DMA limit (AIE-ML buffer descriptors): the wrap of each of the three inner dimensions
# (counted here in elements, the stricter reading).
MAX_WRAP = 1023


def row_split(cols: int) -> int | None:
    """The fewest equal pieces, each an even number of values (whole 32-bit words) within a
    DMA wrap, that a strided row is read in; None if there are none."""
    for pieces in range(1, cols + 1):
        piece = cols // pieces
        if cols % pieces == 0 and piece % 2 == 0 and piece <= MAX_WRAP:
            return pieces
    return None


def row_access(first: int, count: int, cols: int, stride: int):
    """``(offset, sizes, strides)`` in elements, outermost first, of the rows ``first`` to
    ``first + count`` of a ``[rows, stride]`` tensor, ``cols`` values of each."""
    if stride == cols:
        return first * cols, (1, 1, 1, count * cols), (0, 0, 0, 1)
    pieces = row_split(cols)
    return first * stride, (1, count, pieces, cols // pieces), (0, stride, cols // pieces, 1)


def check(rows: int, cols: int, stride: int | None = None) -> None:
    stride = cols if stride is None else stride
    problems = []
    if rows <= 0 or cols <= 0:
        problems.append(f"the shape {rows} x {cols} is empty")
    if (cols * 2) % 4:
        problems.append(f"a row of {cols} bfloat16 is not a whole number of 32-bit words")
    if stride < cols or (stride * 2) % 4:
        problems.append(f"the row stride {stride} is not an even number of at least {cols}")
    if stride != cols and (row_split(cols) is None or max(c for _, c in row_runs(rows)) > MAX_WRAP):
        problems.append(
            f"strided rows of {cols} cannot be cut into even pieces within a DMA wrap, or a "
            f"worker's run of rows exceeds one ({MAX_WRAP})"
        )
    if 4 * cols * 2 + CORE_STACK_BYTES > CORE_MEMORY_BYTES:
        problems.append(f"rows of {cols} do not fit a core double-buffered in and out")
    if problems:
        raise ValueError("; ".join(problems))


def design(dev: str, rows: int, cols: int, stride: int | None = None):
    """The IRON program, resolved to an MLIR module."""
    # mlir-aie is imported here, so that the rest of this file works without it.
    import numpy as np
    from ml_dtypes import bfloat16

    from aie.helpers.taplib import TensorAccessPattern
    from aie.iron import Kernel, ObjectFifo, Worker
    from aie.iron.controlflow import range_
    from aie.iron.device import Tile

    stride = cols if stride is None else stride
    tensor_ty = np.ndarray[(rows * stride,), np.dtype[bfloat16]]
    row_ty = np.ndarray[(cols,), np.dtype[bfloat16]]
    softmax = Kernel("softmax_row_bf16", OBJECT_FILE, [row_ty, row_ty, np.int32])

    def core_fn(of_in, of_out, kernel, count):
        for _ in range_(count) if count > 1 else range(1):
            x = of_in.acquire(1)
            y = of_out.acquire(1)
            kernel(x, y, cols)
            of_in.release(1)
            of_out.release(1)

    lanes = []  # (worker, input fifo, output fifo, shim tile, first row, rows)
    for w, (first, count) in enumerate(row_runs(rows)):
        if count == 0:
            continue
        col, row = w // WORKERS_PER_COLUMN, 2 + w % WORKERS_PER_COLUMN
        fifo_in = ObjectFifo(row_ty, name=f"in{w}")
        fifo_out = ObjectFifo(row_ty, name=f"out{w}")
        worker = Worker(
            core_fn,
            [fifo_in.cons(), fifo_out.prod(), softmax, count],
            placement=Tile(col, row),
        )
        lanes.append((worker, fifo_in, fifo_out, Tile(col, 0), first, count))

    def rows_tap(first, count):
        offset, sizes, strides = row_access(first, count, cols, stride)
        return TensorAccessPattern((1, rows * stride), offset, list(sizes), list(strides))

    return stream_program(dev, tensor_ty, lanes, rows_tap)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dev", choices=["npu", "npu2"], default="npu")
    parser.add_argument("--rows", type=int, required=True, help="rows of one dispatch")
    parser.add_argument("--cols", type=int, required=True, help="values of a row")
    parser.add_argument(
        "--stride", type=int, default=None, help="values from one row to the next (default: cols)"
    )
    parser.add_argument(
        "--plan", action="store_true", help="print the rows of each worker as JSON instead"
    )
    args = parser.parse_args()
    try:
        check(args.rows, args.cols, args.stride)
    except ValueError as e:
        sys.exit(f"softmax.py: {e}")
    if args.plan:
        plan = {"rows": args.rows, "cols": args.cols, "stride": args.stride or args.cols}
        print(json.dumps({**plan, "runs": row_runs(args.rows)}))
        return
    print(design(args.dev, args.rows, args.cols, args.stride))


if __name__ == "__main__":
    main()
