def range_(n):
    assert n > 1, "range_ of a single iteration (mlir-aie issue #1547): use range(1)"
    return range(n)
