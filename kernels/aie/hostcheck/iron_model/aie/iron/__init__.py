"""Kernel, ObjectFifo, Worker, Runtime and Program, recorded and checked (see aie/__init__.py),
with runtime parameters: Buffer(use_write_rtp=True), WorkerRuntimeBarrier, Runtime.inline_ops
and Runtime.set_barrier."""

import hashlib
import math
from collections import defaultdict
from contextlib import contextmanager

SHIM_ROW, MEM_ROW = 0, 1
CHANNELS = {SHIM_ROW: 2, MEM_ROW: 6}  # DMA channels each way; compute tiles have 2
_tracing = []  # the worker whose core function runs
_clock = [0]  # orders the runtime sequence's writes of parameters and barriers
_runtime_writing = []  # set while the runtime sequence's inline operations run


def _tick() -> int:
    _clock[0] += 1
    return _clock[0]


class Rtp(int):
    """A value a core read from a runtime parameter: known only at run time."""


class Buffer:
    """A buffer in a core's memory; with use_write_rtp, runtime parameters the runtime
    sequence writes (Runtime.inline_ops) and the core reads after its barrier."""

    every = []

    def __init__(self, ty, name=None, initial_value=None, use_write_rtp=False):
        self.name, self.elements, self.rtp = name, _elements(ty), use_write_rtp
        self.values = [None] * self.elements
        self.written_at = [None] * self.elements
        if initial_value is not None:
            assert len(initial_value) == self.elements, f"{name}: initial value of another size"
        self.worker = None
        Buffer.every.append(self)

    def __setitem__(self, i, value):
        assert self.rtp, f"{self.name}: written by the runtime but not a runtime parameter"
        assert _runtime_writing, f"{self.name}: a runtime parameter written outside inline_ops"
        assert 0 <= i < self.elements, f"{self.name}[{i}]: outside the buffer"
        assert isinstance(value, int), f"{self.name}[{i}] = {value!r}"
        self.values[i] = int(value)
        self.written_at[i] = _tick()

    def __getitem__(self, i):
        worker = _tracing[-1]
        assert self.worker is worker, f"{self.name}: read by a worker it is not given to"
        assert 0 <= i < self.elements, f"{self.name}[{i}]: outside the buffer"
        assert worker.released_at is not None, f"{self.name}[{i}]: read before the barrier"
        assert self.written_at[i] is not None, f"{self.name}[{i}]: read but never written"
        assert self.written_at[i] < worker.released_at, (
            f"{self.name}[{i}]: written after the barrier that lets the core read it")
        return Rtp(self.values[i])

    def signature(self) -> str:
        return f"buffer {self.name} {self.elements} rtp={self.rtp}"


class WorkerRuntimeBarrier:
    def __init__(self):
        self.value, self.set_at, self.worker = None, None, None

    def wait_for_value(self, value):
        # An acquire-equal: it waits for the value and leaves it as it is.
        worker = _tracing[-1]
        assert self.worker is worker, "a barrier waited on by a worker it is not given to"
        assert self.value == value, f"a barrier waited for {value} is set to {self.value}"
        worker.released_at = self.set_at
        worker.waited.append((self, value))

    def release_with_value(self, value):
        # A lock release: it moves the value by `value`.
        worker = _tracing[-1]
        assert self.worker is worker, "a barrier released by a worker it is not given to"
        assert value != 0, "a barrier released with 0 does not move"
        self.value += value


def _elements(ty) -> int:
    return math.prod(ty.__args__[0])


def _tile(endpoint):
    return endpoint.placement.key() if isinstance(endpoint, Worker) else endpoint[1].key()


class Kernel:
    def __init__(self, name, bin_name, arg_types=()):
        self.name, self.bin_name, self.arg_types = name, bin_name, list(arg_types)

    def __call__(self, *args):
        assert len(args) == len(self.arg_types), f"{self.name}: {len(args)} arguments"
        for arg, ty in zip(args, self.arg_types):
            if isinstance(arg, _Object):
                assert _elements(arg.fifo.obj_type) == _elements(ty), f"{self.name}: {arg.fifo.name}"
            else:
                assert isinstance(arg, int), f"{self.name}: {arg!r}"


class _Object:
    def __init__(self, fifo):
        self.fifo = fifo


class ObjectFifo:
    every = []

    def __init__(self, obj_type, depth=2, name=None, dims_to_stream=None, **_):
        self.obj_type, self.depth, self.name, self.dims = obj_type, depth, name, dims_to_stream
        self.producer, self.consumers, self.link = None, [], None
        if dims_to_stream:
            assert math.prod(s for s, _ in dims_to_stream[1:]) <= _elements(obj_type), name
        ObjectFifo.every.append(self)

    def prod(self, depth=None):
        if self.producer is None:
            self.producer = _Handle(self, True)
        return self.producer

    def cons(self, depth=None, dims_from_stream=None):
        handle = _Handle(self, False)
        self.consumers.append(handle)
        return handle


class _Handle:
    def __init__(self, fifo, is_prod):
        self.fifo, self.is_prod, self.endpoint = fifo, is_prod, None

    def acquire(self, n):
        worker = _tracing[-1]
        assert self.endpoint is worker, f"{self.fifo.name}: acquired by a worker not holding it"
        worker.held[self] += n
        assert worker.held[self] <= self.fifo.depth, f"{self.fifo.name}: beyond its depth"
        worker.taken[self] += n
        if n > 1:
            # IRON's acquire of several objects: indexable, one object each.
            return [_Object(self.fifo) for _ in range(n)]
        return _Object(self.fifo)

    def release(self, n):
        worker = _tracing[-1]
        worker.held[self] -= n
        assert worker.held[self] >= 0, f"{self.fifo.name}: released more than acquired"

    def forward(self, placement=None, obj_type=None, depth=None, name=None, dims_to_stream=None,
                dims_from_stream=None):
        assert not self.is_prod
        out = ObjectFifo(obj_type or self.fifo.obj_type, depth or self.fifo.depth, name, dims_to_stream)
        assert _elements(out.obj_type) == _elements(self.fifo.obj_type), name
        self.endpoint = out.prod().endpoint = ("link", placement)
        out.link = [self.fifo]
        return out

    def join(self, offsets, placement=None, depths=None, obj_types=None, names=None,
             dims_to_stream=None, dims_from_stream=None):
        assert self.is_prod
        parts = [ObjectFifo(t, d, n) for t, d, n in zip(obj_types, depths, names)]
        sizes = [_elements(t) for t in obj_types]
        assert sum(sizes) == _elements(self.fifo.obj_type), self.fifo.name
        assert list(offsets) == [sum(sizes[:i]) for i in range(len(sizes))], offsets
        self.endpoint = ("link", placement)
        for part in parts:
            part.cons().endpoint = ("link", placement)
        self.fifo.link = parts
        return parts


class Worker:
    every = []

    def __init__(self, core_fn, fn_args=(), placement=None, while_true=True):
        self.core_fn, self.fn_args, self.placement = core_fn, list(fn_args), placement
        assert len({a.bin_name for a in fn_args if isinstance(a, Kernel)}) <= 1, "one binary a worker"
        for arg in fn_args:
            assert not isinstance(arg, ObjectFifo), "a worker takes handles, not ObjectFifos"
            if isinstance(arg, _Handle):
                arg.endpoint = self
            if isinstance(arg, (Buffer, WorkerRuntimeBarrier)):
                assert arg.worker is None, "a buffer or barrier given to two workers"
                arg.worker = self
        self.held, self.taken = defaultdict(int), defaultdict(int)
        self.released_at = None
        self.waited = []
        Worker.every.append(self)

    def run_one_dispatch(self):
        _tracing.append(self)
        self.core_fn(*self.fn_args)
        _tracing.pop()
        assert not any(self.held.values()), "objects still held at the end of a dispatch"
        # The core loops forever, one iteration a dispatch: a barrier still at the value it
        # waited for lets the next dispatch's wait pass before that dispatch has written its
        # runtime parameters.
        for barrier, value in self.waited:
            assert barrier.value != value, (
                f"a barrier still at {value} after the dispatch that waited for it: the next "
                "dispatch would read its runtime parameters before they are written")

    def signature(self) -> str:
        """What the array's configuration holds of this worker: its tile, its kernels and
        what it is given (never a count of the dispatch)."""
        args = []
        for arg in self.fn_args:
            if isinstance(arg, Kernel):
                args.append(f"kernel {arg.name} {arg.bin_name} {len(arg.arg_types)}")
            elif isinstance(arg, _Handle):
                args.append(f"{'prod' if arg.is_prod else 'cons'} {arg.fifo.name}")
            elif isinstance(arg, Buffer):
                args.append(arg.signature())
            elif isinstance(arg, WorkerRuntimeBarrier):
                args.append("barrier")
            else:
                args.append(repr(arg))
        tile = self.placement.key() if self.placement is not None else None
        return f"worker {tile}: " + "; ".join(args)


class _Buffer:
    def __init__(self, ty):
        self.elements = _elements(ty)


# Tasks queued on one shim DMA channel at once at most (gemm.py's MAX_QUEUED_TASKS): the
# tasks of the task groups not yet finished, per channel (a FIFO's shim end).
MAX_QUEUED_TASKS = 4


class Runtime:
    def __init__(self):
        self.tasks, self.open_groups, self.workers = [], [], []
        self.queued = defaultdict(list)

    @contextmanager
    def sequence(self, *types):
        buffers = tuple(_Buffer(t) for t in types)
        yield buffers if len(buffers) > 1 else buffers[0]
        assert not self.open_groups, "task groups left open"

    def start(self, *workers):
        self.workers += workers

    def inline_ops(self, fn, buffers):
        _runtime_writing.append(True)
        try:
            fn(*buffers)
        finally:
            _runtime_writing.pop()

    def set_barrier(self, barrier, value):
        assert barrier.worker in self.workers, "a barrier of a worker not started"
        barrier.value, barrier.set_at = value, _tick()

    def task_group(self):
        group = object()
        self.open_groups.append(group)
        return group

    def finish_task_group(self, group):
        self.open_groups.remove(group)
        for channel in self.queued:
            self.queued[channel] = [g for g in self.queued[channel] if g is not group]

    def _task(self, kind, handle, buffer, tap, task_group, placement):
        assert task_group in self.open_groups, "a task outside an open task group"
        first, last = tap.extent()
        assert 0 <= first and last < buffer.elements, f"{handle.fifo.name}: outside its buffer"
        assert handle.endpoint is None or handle.endpoint[0] == "shim", handle.fifo.name
        handle.endpoint = ("shim", placement)
        self.tasks.append((kind, handle, tap))
        queue = self.queued[id(handle)]
        queue.append(task_group)
        assert len(queue) <= MAX_QUEUED_TASKS, (
            f"{handle.fifo.name}: {len(queue)} tasks queued on one shim channel")

    def fill(self, handle, source, tap=None, task_group=None, wait=False, placement=None):
        assert handle.is_prod
        self._task("fill", handle, source, tap, task_group, placement)

    def drain(self, handle, dest, tap=None, task_group=None, wait=False, placement=None):
        assert not handle.is_prod
        self._task("drain", handle, dest, tap, task_group, placement)


class Program:
    def __init__(self, device, runtime):
        self.device, self.rt = device, runtime

    def resolve_program(self, placer):
        for worker in self.rt.workers:
            worker.run_one_dispatch()
        made = defaultdict(int)  # objects entering each FIFO in one dispatch
        for kind, handle, tap in self.rt.tasks:
            if kind == "fill":
                size = _elements(handle.fifo.obj_type)
                assert tap.count() % size == 0, f"{handle.fifo.name}: a partial object"
                made[handle.fifo] += tap.count() // size
        for worker in self.rt.workers:
            for handle, n in worker.taken.items():
                if handle.is_prod:
                    made[handle.fifo] += n
        pending = [f for f in ObjectFifo.every if f.link]
        while pending:
            ready = [f for f in pending if all(s in made for s in f.link)]
            assert ready, "a link never fed"
            for f in ready:
                counts = {made[s] for s in f.link}
                assert len(counts) == 1, f"{f.name}: joined parts differ"
                made[f] = counts.pop()
                pending.remove(f)
        for fifo in ObjectFifo.every:
            for handle in fifo.consumers:
                if isinstance(handle.endpoint, Worker):
                    taken = handle.endpoint.taken[handle]
                    assert taken == made[fifo], f"{fifo.name}: a consumer takes {taken} of {made[fifo]}"
        drained = defaultdict(int)
        for kind, handle, tap in self.rt.tasks:
            if kind == "drain":
                drained[handle.fifo] += tap.count() // _elements(handle.fifo.obj_type)
        for fifo, n in drained.items():
            assert n == made[fifo], f"{fifo.name}: {n} objects drained of {made[fifo]}"
        into, out_of = defaultdict(int), defaultdict(int)
        for fifo in ObjectFifo.every:
            source = _tile(fifo.producer.endpoint)
            out_of[source] += 1  # one channel, broadcast or not
            for tile in {_tile(h.endpoint) for h in fifo.consumers}:
                into[tile] += 1
        for counts in (into, out_of):
            for tile, n in counts.items():
                assert n <= CHANNELS.get(tile[1], 2), f"tile {tile}: {n} DMA channels one way"
        # What the xclbin would hold (the array's configuration) apart from what the
        # instruction stream holds (the runtime sequence), so that build.sh can tell whether
        # two shapes can share an xclbin, as it does with real MLIR.
        fifos = []
        for fifo in ObjectFifo.every:
            link = [f.name for f in fifo.link] if fifo.link else []
            fifos.append(f"fifo {fifo.name} {_elements(fifo.obj_type)} depth={fifo.depth} "
                         f"dims={fifo.dims} link={link}")
        array = sorted(fifos) + sorted(w.signature() for w in self.rt.workers)
        rtp = [(b.name, b.values) for b in Buffer.every if b.rtp]
        return "\n".join(
            [f"// IRON model: {len(self.rt.workers)} workers, {len(ObjectFifo.every)} object "
             f"FIFOs; object counts, buffer bounds, DMA channels and runtime parameters "
             f"consistent",
             f"// array {hashlib.sha256(repr(array).encode()).hexdigest()}"]
            + [f"//   {line}" for line in array]
            + ["aiex.runtime_sequence @model {",
               f"  // {len(self.rt.tasks)} DMA tasks, runtime parameters {rtp}",
               "}"])
