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

/// Clock of the NPU's AIE-ML tiles on Phoenix, Hz. AMD Research's Riallto notebooks
/// (`3_2_Ryzenai_capabilities`): "The NPU and hence each AIE is clocked at 1 GHz"; this
/// agrees with AMD's 10 TOPS int8 rating over 20 cores of 512 int8 operations a cycle.
pub const XDNA1_CLOCK_HZ: f64 = 1.0e9;
/// bfloat16 multiply-accumulates per cycle of one AIE-ML core (AM020, and Riallto's table:
/// "bfloat16 | bfloat16 | 128").
pub const AIE_ML_BF16_MACS_PER_CYCLE: f64 = 128.0;
/// Peak bfloat16 rate of the whole-array GEMM's 4 x 4 cores at [`XDNA1_CLOCK_HZ`], FLOP/s:
/// 16 x 128 x 2 x 1 GHz = 4.1 TFLOP/s.
pub const XDNA1_PEAK_BF16_FLOPS: f64 =
    (XDNA1_ROWS * XDNA1_COLUMNS) as f64 * AIE_ML_BF16_MACS_PER_CYCLE * 2.0 * XDNA1_CLOCK_HZ;
/// Sustained bfloat16 GEMM rate of the whole array on products of Whisper's size, FLOP/s, for
/// predictions. Published measurements on the 4 x 4 array: about 0.6 TFLOP/s for 1024^3 bf16
/// (nod-ai/iree-amd-aie PR #282) and 1.94 TFLOP/s for 2048 x 4096 x 2048 with a tuned
/// micro-kernel (PR #415). Whisper's products (1500 x 512 x 512 to 1500 x 5120 x 1280) sit
/// between the two: 1 TFLOP/s, a quarter of the peak.
pub const XDNA1_SUSTAINED_BF16_FLOPS: f64 = 1.0e12;
/// Host memory <-> NPU transfer rate, bytes/s, for predictions: an estimate, no measurement
/// being published. Each of the 4 shim tiles has 2 input and 2 output DMA channels of 32 bits
/// a cycle (Riallto), about 8 GB/s per column each way at 1 GHz, 32 GB/s in all; half of that
/// is assumed sustained from DDR.
pub const XDNA1_HOST_BYTES_PER_S: f64 = 16.0e9;
/// Fixed cost of one dispatch (submit, run, wait) through XRT's C++ API with buffers
/// allocated beforehand, seconds, for predictions: about 45 us for an empty kernel
/// (Xilinx/mlir-aie issue #2381).
pub const XDNA1_DISPATCH_SECONDS: f64 = 50.0e-6;
/// Creating a hardware context when the budget is full (giving up another), seconds, for
/// predictions: "exceeding it costs ~2.5 ms per context create in thrash", measured on a
/// Ryzen 7 PRO 8845HS (XDNA1) with amdxdna 0.6.0 and XRT 2.21 (drakosha/whisper-xdna,
/// README, "Gotchas found the hard way"). The same source measured 2.81 ms for a pair of
/// switches between two contexts already created.
pub const XDNA1_CONTEXT_CREATE_SECONDS: f64 = 2.5e-3;
