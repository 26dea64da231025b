# Elementwise GELU of the kernel contract as an IRON design (mlir-aie), one dispatch.
#
# Usage: python3 gelu.py --dev npu --elements 384000 > aie.mlir
#
# After mlir-aie's programming_examples/ml/gelu (gelu.py): workers fed straight from shim
# DMA channels through object FIFOs, the data cut into contiguous chunks. Written anew.
"""Elementwise GELU of kernels/src/gelu.rs on XDNA: one dispatch of ``elements`` values.

The host buffers, in the order of the runtime sequence (XRT kernel arguments 3 and 4), are
the input and the output, bfloat16 ``[elements]``. The elements are cut into a bulk of
7 x T x 1024 values, seven workers taking T objects of 1024 each, and a tail of fewer than
7 x 1024 values that an eighth worker takes as a single object; each worker has its own shim
DMA channel in and out (two workers per column).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "common"))
from streaming import stream_program  # noqa: E402

COLUMNS = 4
WORKERS_PER_COLUMN = 2
BULK_WORKERS = COLUMNS * WORKERS_PER_COLUMN - 1
OBJECT_ELEMENTS = 1024
OBJECT_FILE = "gelu.o"
CORE_MEMORY_BYTES = 64 * 1024
CORE_STACK_BYTES = 1024


def split(elements: int) -> tuple[int, int]:
    """``(objects per bulk worker, tail elements)``."""
    per_worker = elements // (BULK_WORKERS * OBJECT_ELEMENTS)
    return per_worker, elements - per_worker * BULK_WORKERS * OBJECT_ELEMENTS


def check(elements: int) -> None:
    problems = []
    if elements <= 0:
        problems.append("no elements")
    if elements % 2:
        problems.append(
            f"{elements} bfloat16 values are not a whole number of 32-bit words, the DMA's unit"
        )
    _, tail = split(elements)
    # The tail object is single-buffered in and out.
    if 2 * tail * 2 + CORE_STACK_BYTES > CORE_MEMORY_BYTES:
        problems.append(f"a tail of {tail} values does not fit a core")
    if problems:
        raise ValueError("; ".join(problems))


def design(dev: str, elements: int):
    """The IRON program, resolved to an MLIR module."""
    # mlir-aie is imported here, so that the rest of this file works without it.
    import numpy as np
    from ml_dtypes import bfloat16

    from aie.helpers.taplib import TensorAccessPattern
    from aie.iron import Kernel, ObjectFifo, Worker
    from aie.iron.controlflow import range_
    from aie.iron.device import Tile

    per_worker, tail = split(elements)
    tensor_ty = np.ndarray[(elements,), np.dtype[bfloat16]]
    bulk_ty = np.ndarray[(OBJECT_ELEMENTS,), np.dtype[bfloat16]]

    def core_fn(of_in, of_out, kernel, objects, count):
        for _ in range_(objects) if objects > 1 else range(1):
            x = of_in.acquire(1)
            y = of_out.acquire(1)
            kernel(x, y, count)
            of_in.release(1)
            of_out.release(1)

    lanes = []  # (worker, input fifo, output fifo, shim tile, first element, elements)
    slots = [
        (w // WORKERS_PER_COLUMN, 2 + w % WORKERS_PER_COLUMN)
        for w in range(COLUMNS * WORKERS_PER_COLUMN)
    ]
    if per_worker:
        gelu = Kernel("gelu_bf16", OBJECT_FILE, [bulk_ty, bulk_ty, np.int32])
        for w in range(BULK_WORKERS):
            col, row = slots[w]
            fifo_in = ObjectFifo(bulk_ty, name=f"in{w}")
            fifo_out = ObjectFifo(bulk_ty, name=f"out{w}")
            worker = Worker(
                core_fn,
                [fifo_in.cons(), fifo_out.prod(), gelu, per_worker, OBJECT_ELEMENTS],
                placement=Tile(col, row),
            )
            span = per_worker * OBJECT_ELEMENTS
            lanes.append((worker, fifo_in, fifo_out, Tile(col, 0), w * span, span))
    if tail:
        tail_ty = np.ndarray[(tail,), np.dtype[bfloat16]]
        gelu_tail = Kernel("gelu_tail_bf16", OBJECT_FILE, [tail_ty, tail_ty, np.int32])
        col, row = slots[BULK_WORKERS]
        fifo_in = ObjectFifo(tail_ty, 1, name="in_tail")
        fifo_out = ObjectFifo(tail_ty, 1, name="out_tail")
        worker = Worker(
            core_fn,
            [fifo_in.cons(), fifo_out.prod(), gelu_tail, 1, tail],
            placement=Tile(col, row),
        )
        lanes.append((worker, fifo_in, fifo_out, Tile(col, 0), elements - tail, tail))

    def span_tap(first, count):
        return TensorAccessPattern((1, elements), first, [1, 1, 1, count], [0, 0, 0, 1])

    return stream_program(dev, tensor_ty, lanes, span_tap)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dev", choices=["npu", "npu2"], default="npu")
    parser.add_argument("--elements", type=int, required=True, help="values of one dispatch")
    parser.add_argument(
        "--plan", action="store_true", help="print the cut into objects as JSON instead"
    )
    args = parser.parse_args()
    try:
        check(args.elements)
    except ValueError as e:
        sys.exit(f"gelu.py: {e}")
    if args.plan:
        per_worker, tail = split(args.elements)
        print(
            json.dumps(
                {
                    "elements": args.elements,
                    "bulk_workers": BULK_WORKERS if per_worker else 0,
                    "objects_per_worker": per_worker,
                    "object_elements": OBJECT_ELEMENTS,
                    "tail": tail,
                }
            )
        )
        return
    print(design(args.dev, args.elements))


if __name__ == "__main__":
    main()
