"""The runtime sequence shared by the streaming designs (softmax, GELU).

Each lane is a worker with an input and an output object FIFO, fed from and drained to its
shim tile over a span of the flat tensor. `stream_program` starts the workers, fills and
drains every lane in one task group, and places the program on the target device.
"""

from __future__ import annotations


def stream_program(dev: str, tensor_ty, lanes, span_tap):
    """The placed program of `lanes` (tuples of worker, input FIFO, output FIFO, shim tile,
    first element, element count) over `tensor_ty`; `span_tap(first, count)` is the access
    pattern of one lane's span."""
    from aie.iron import Program, Runtime
    from aie.iron.device import NPU1Col4, NPU2
    from aie.iron.placers import SequentialPlacer

    rt = Runtime()
    with rt.sequence(tensor_ty, tensor_ty) as (x, y):
        rt.start(*[lane[0] for lane in lanes])
        group = rt.task_group()
        for _, fifo_in, _, shim, first, count in lanes:
            rt.fill(fifo_in.prod(), x, tap=span_tap(first, count), task_group=group, placement=shim)
        for _, _, fifo_out, shim, first, count in lanes:
            rt.drain(
                fifo_out.cons(),
                y,
                tap=span_tap(first, count),
                wait=True,
                task_group=group,
                placement=shim,
            )
        rt.finish_task_group(group)

    device = NPU1Col4() if dev == "npu" else NPU2()
    return Program(device, rt).resolve_program(SequentialPlacer())
