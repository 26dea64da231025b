from . import Rtp


def range_(n):
    """A core's loop. A count read from a runtime parameter is a value at run time, any count
    (0 and 1 included); a constant count of 1 is refused (mlir-aie issue #1547: write
    range(1))."""
    if isinstance(n, Rtp):
        assert n >= 0, f"a loop over a negative runtime count {int(n)}"
        return range(int(n))
    assert n > 1, "range_ of a single iteration (mlir-aie issue #1547): use range(1)"
    return range(n)
