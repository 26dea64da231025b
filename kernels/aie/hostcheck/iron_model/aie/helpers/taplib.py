"""TensorAccessPattern as the designs build it: four (size, stride) dimensions, outermost
first, in elements of the host buffer."""

MAX_WRAP = 1023  # the three inner dimensions of a shim buffer descriptor
MAX_REPEAT = 64  # the outermost (repeat) dimension


class TensorAccessPattern:
    def __init__(self, tensor_dims, offset, sizes, strides):
        assert len(sizes) == 4 and len(strides) == 4, (sizes, strides)
        self.tensor_dims = tuple(tensor_dims)
        self.offset, self.sizes, self.strides = offset, list(sizes), list(strides)
        assert all(s >= 1 for s in sizes), sizes
        linear = self.sizes[:3] == [1, 1, 1] and self.strides[3] == 1
        if not linear:
            assert all(s <= MAX_WRAP for s in self.sizes[1:]), f"wrap beyond {MAX_WRAP}: {sizes}"
        assert self.sizes[0] <= MAX_REPEAT, f"repeat beyond {MAX_REPEAT}: {sizes}"
        for size, stride in zip(self.sizes[1:], self.strides[1:]):
            assert size == 1 or stride > 0, f"a zero stride below the outermost dimension: {strides}"

    def count(self) -> int:
        n = 1
        for s in self.sizes:
            n *= s
        return n

    def extent(self) -> tuple[int, int]:
        last = self.offset + sum((s - 1) * t for s, t in zip(self.sizes, self.strides))
        return self.offset, last
