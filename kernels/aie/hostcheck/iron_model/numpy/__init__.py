"""Just enough of numpy's type syntax (np.ndarray[(shape,), np.dtype[T]]) for the IRON model."""


class _Alias:
    def __init__(self, args):
        self.__args__ = args


class ndarray:
    def __class_getitem__(cls, item):
        return _Alias(item)


class dtype:
    def __class_getitem__(cls, item):
        return item


class float32:
    pass


class int32:
    pass


def zeros(n, dtype=None):
    """A buffer's initial value: a list of n zeros."""
    return [0] * n
