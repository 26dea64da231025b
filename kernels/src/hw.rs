//! Hardware figures of AMD's XDNA NPUs that the kernel contract depends on.
//!
//! Sources:
//! - AMD, "AIE-ML Architecture Manual" (AM020): compute tiles with 64 KiB of data memory,
//!   memory tiles of 512 KiB, bfloat16 matrix multiply-accumulate into float32 accumulators;
//! - mlir-aie, `programming_examples/basic/matrix_multiplication/whole_array` (its README and
//!   `whole_array.py`): the whole-array GEMM on `npu1_4col` uses 4 columns x 4 rows of compute
//!   tiles, a bf16 `mmul` micro-kernel of 4x8x4, and default per-core tiles of m=64, k=64,
//!   n=32 (bf16 in, f32 out); on `npu2` (XDNA2) 8 columns x 4 rows, and a bf16 `mmul` of 4x8x8
//!   (its `microkernel_mac_dim_map`; the 8x8x8 shape listed there emulates bf16 with block
//!   floating point, other numerics, not used here).

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

/// Compute-tile rows of the whole-array GEMM on XDNA2 (Strix, Strix Halo, Krackan, Gorgon:
/// mlir-aie's `npu2`).
pub const XDNA2_ROWS: usize = 4;
/// Compute-tile columns on XDNA2 (`npu2`: 8, each with a memory tile of [`MEM_TILE_BYTES`]).
pub const XDNA2_COLUMNS: usize = 8;
/// The bf16 `mmul` shape on AIE2P (rows x inner x columns), mlir-aie's `whole_array.py`.
pub const AIE2P_MMUL_SHAPE: (usize, usize, usize) = (4, 8, 8);
/// bfloat16 multiply-accumulates per cycle of one AIE2P core: the 4x8x8 `mmul` a cycle, twice
/// AIE-ML's 4x8x4 (an assumption from the shapes; no public table states it).
pub const AIE2P_BF16_MACS_PER_CYCLE: f64 = 256.0;
/// Clock of the XDNA2 NPU's cores, Hz: AMD rates the Ryzen AI 300 NPU at 50 TOPS int8, which
/// over 32 cores of 512 int8 multiply-accumulates a cycle (the 8x8x8 int8 `mmul`) is 1.5 GHz
/// (derived, not published as such).
pub const XDNA2_CLOCK_HZ: f64 = 1.5e9;
/// Peak bfloat16 rate of the whole array on XDNA2 under those assumptions, FLOP/s:
/// 32 x 256 x 2 x 1.5 GHz = 24.6 TFLOP/s.
pub const XDNA2_PEAK_BF16_FLOPS: f64 =
    (XDNA2_ROWS * XDNA2_COLUMNS) as f64 * AIE2P_BF16_MACS_PER_CYCLE * 2.0 * XDNA2_CLOCK_HZ;
/// Sustained bf16 GEMM rate on XDNA2 for predictions: the same quarter of the peak as
/// [`XDNA1_SUSTAINED_BF16_FLOPS`] (no published XDNA2 bf16 GEMM measurement was found).
pub const XDNA2_SUSTAINED_BF16_FLOPS: f64 = XDNA2_PEAK_BF16_FLOPS / 4.0;
/// Host memory <-> NPU rate on XDNA2 for predictions: 8 shim columns to XDNA1's 4 at 1.5 times
/// the clock, half of it sustained from memory as for XDNA1, capped by nothing known: an
/// estimate, 48 GB/s.
pub const XDNA2_HOST_BYTES_PER_S: f64 = 48.0e9;

/// A family of XDNA NPUs: the array, the bf16 `mmul`, the context budget and the figures a
/// prediction uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceFamily {
    /// XDNA1: Phoenix, Hawk Point (`npu1_4col`): 4 x 4 cores, 6 hardware contexts.
    #[default]
    Xdna1,
    /// XDNA2: Strix Point, Strix Halo, Krackan, Gorgon (`npu2`): 4 x 8 cores, 16 contexts.
    Xdna2,
}

crate::named_variants!(DeviceFamily { Xdna1 => "xdna1", Xdna2 => "xdna2" });

impl DeviceFamily {
    /// The family of a device XRT names `name` (`RyzenAI-npu1`, `NPU Strix`, `RyzenAI-npu4`,
    /// ...): XDNA2's names, else XDNA1.
    pub fn from_device_name(name: &str) -> DeviceFamily {
        let xdna2 = ["npu4", "npu5", "npu6", "Strix", "Krackan", "Gorgon"]
            .iter()
            .any(|m| name.contains(m));
        if xdna2 {
            DeviceFamily::Xdna2
        } else {
            DeviceFamily::Xdna1
        }
    }

    /// The family mlir-aie's `target` (`npu1_4col`, `npu2`) builds for.
    pub fn from_target(target: &str) -> Option<DeviceFamily> {
        match target {
            "npu1" | "npu1_4col" | "npu" => Some(DeviceFamily::Xdna1),
            "npu2" => Some(DeviceFamily::Xdna2),
            _ => None,
        }
    }

    /// mlir-aie's target for this family.
    pub fn target(self) -> &'static str {
        match self {
            DeviceFamily::Xdna1 => "npu1_4col",
            DeviceFamily::Xdna2 => "npu2",
        }
    }

    /// The family's name (`XDNA1`, `XDNA2`).
    pub fn name(self) -> &'static str {
        match self {
            DeviceFamily::Xdna1 => "XDNA1",
            DeviceFamily::Xdna2 => "XDNA2",
        }
    }

    /// Sustained bf16 GEMM rate for predictions, FLOP/s.
    pub fn sustained_bf16_flops(self) -> f64 {
        match self {
            DeviceFamily::Xdna1 => XDNA1_SUSTAINED_BF16_FLOPS,
            DeviceFamily::Xdna2 => XDNA2_SUSTAINED_BF16_FLOPS,
        }
    }

    /// Host <-> NPU rate for predictions, bytes/s.
    pub fn host_bytes_per_s(self) -> f64 {
        match self {
            DeviceFamily::Xdna1 => XDNA1_HOST_BYTES_PER_S,
            DeviceFamily::Xdna2 => XDNA2_HOST_BYTES_PER_S,
        }
    }
}
