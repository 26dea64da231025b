"""A recording stand-in for the parts of mlir-aie's IRON API that kernels/aie's designs use.

It is not mlir-aie and produces no MLIR. It runs a design's Python (its object FIFOs, links,
workers' core functions and runtime sequence) and checks what can be checked without the
toolchain: every consumer takes exactly the objects produced per dispatch, access patterns
stay inside their host buffers and within shim buffer-descriptor limits, and no tile uses more
DMA channels than it has. hostcheck/run.sh puts this directory first on PYTHONPATH.
"""
