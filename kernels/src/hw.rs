//! Hardware figures of AMD's XDNA NPUs that the kernel contract depends on.
//!
//! Sources:
//! - AMD, "AIE-ML Architecture Manual" (AM020): compute tiles with 64 KiB of data memory,
//!   memory tiles of 512 KiB, bfloat16 matrix multiply-accumulate into float32 accumulators;
//! - mlir-aie, `programming_examples/basic/matrix_multiplication/whole_array` (its README and
//!   `whole_array.py`): the whole-array GEMM on `npu1_4col` uses 4 columns x 4 rows of compute
//!   tiles, a bf16 `mmul` micro-kernel of 4x8x4, and default per-core tiles of m=64, k=64,
//!   n=32 (bf16 in, f32 out).

/// Compute-tile rows used by the whole-array GEMM on XDNA1 (Phoenix, Hawk Point).
pub const XDNA1_ROWS: usize = 4;
/// Compute-tile columns used by the whole-array GEMM on XDNA1 (`npu1_4col`).
pub const XDNA1_COLUMNS: usize = 4;
/// Bytes of one memory tile (one per column), AM020.
pub const MEM_TILE_BYTES: usize = 512 * 1024;
/// Bytes of data memory in one compute tile, AM020.
pub const CORE_DATA_BYTES: usize = 64 * 1024;
/// The bf16 `mmul` shape on AIE-ML (rows x inner x columns), mlir-aie's `mm.cc`.
pub const MMUL_SHAPE: (usize, usize, usize) = (4, 8, 4);
