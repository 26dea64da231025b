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
/// Host memory <-> NPU transfer rate, bytes/s, each way (reads and writes use different
/// channels), for predictions: an estimate, no measurement being published. Each of the 4 shim
/// tiles has 2 input and 2 output DMA channels of 32 bits a cycle (Riallto), about 8 GB/s per
/// column each way at 1 GHz, 32 GB/s each way in all; half of that is assumed sustained from
/// DDR.
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

    /// Host <-> NPU rate for predictions, bytes/s.
    pub fn host_bytes_per_s(self) -> f64 {
        match self {
            DeviceFamily::Xdna1 => XDNA1_HOST_BYTES_PER_S,
            DeviceFamily::Xdna2 => XDNA2_HOST_BYTES_PER_S,
        }
    }
}

pub mod cost {
    //! The GEMM design's cost, derived from its loops (`kernels/aie/gemm/gemm.cc`, `gemm.py`) and
    //! the array's figures, for predictions: cycles of one core, and the DMA channels' rates.
    //!
    //! A core's work in one dispatch (every core of the array does the same, in parallel):
    //!
    //! - each k-tile call (`gemm_ktile_bf16_f32`) runs `(m / 2r) (n / 2t)` quads of the `r x s x t`
    //!   mmul; a quad issues `4 k / s` mmuls, one a cycle ([`MMUL_ISSUE_CYCLES`]), then adds its
    //!   four accumulators into C: four loads, adds and stores of `r t` floats, bound by the one
    //!   256-bit store port ([`STORE_BYTES_PER_CYCLE`]), after the multiplier's pipeline has
    //!   drained ([`MAC_PIPELINE_CYCLES`]); the call then releases its A and B objects and
    //!   acquires the next ([`CALL_CYCLES`]);
    //! - each output tile is zeroed first (stores of `m n` floats), and after its last k-tile goes
    //!   through the epilogue: the bias, a load, add and store per 16 lanes (store-bound again), and
    //!   for `bias_gelu` `gelu16` on every 16 lanes ([`GELU16_VECTOR_OPS`] vector operations, one
    //!   a cycle); the bfloat16-output kernel instead rounds its accumulator tile into the C
    //!   object ([`ROUND16_VECTOR_OPS`] a 16 lanes);
    //! - the bias's parts are copied into the core's stash once a dispatch, a word a cycle.
    //!
    //! What no public figure gives is marked as an estimate where it is defined: the pipeline
    //! drain, the call's synchronisation and the one-operation-a-cycle issue of the epilogues
    //! (a VLIW core can issue more). A device's trace would replace them.

    use super::DeviceFamily;

    /// Cycles between two bf16 `mmul` issues in a quad's inner loop: the multiplier takes one a
    /// cycle (AM020: 128 bf16 multiply-accumulates a cycle on AIE-ML, one 4x8x4 `mmul`; AIE2P's
    /// 4x8x8 likewise at [`super::AIE2P_BF16_MACS_PER_CYCLE`]).
    pub const MMUL_ISSUE_CYCLES: u64 = 1;
    /// Bytes one core stores a cycle: one 256-bit store port (AM020, "AIE-ML Memory": two 256-bit
    /// load ports and one 256-bit store port).
    pub const STORE_BYTES_PER_CYCLE: u64 = 32;
    /// Cycles of the multiplier's pipeline a quad waits out before its accumulators can be
    /// added into C: an estimate (no public figure; AM020 states a multi-stage MAC pipeline).
    pub const MAC_PIPELINE_CYCLES: u64 = 8;
    /// Cycles a k-tile call spends outside its quads: the call, the release of its A and B
    /// objects and the acquisition of the next two (lock operations that do not wait when the
    /// DMA is ahead): an estimate.
    pub const CALL_CYCLES: u64 = 32;
    /// Cycles an output tile spends acquiring and releasing its C object: an estimate.
    pub const TILE_SYNC_CYCLES: u64 = 16;
    /// Vector operations of `gelu16` on 16 lanes, counted in `kernels/aie/common/vmath.h`
    /// (the roundings to bfloat16 are six operations each: 5 in `gelu16` itself, 8 in `exp16`,
    /// 6 in `recip16`; with the products, additions, comparisons and selects, about 180),
    /// issued one a cycle.
    pub const GELU16_VECTOR_OPS: u64 = 180;
    /// Vector operations of `exp16` on 16 lanes, counted in `kernels/aie/common/vmath.h`: its
    /// eight roundings to bfloat16 (six operations each), the clamp's key and select, the
    /// products, additions and the exponent's shift, about 76.
    pub const EXP16_VECTOR_OPS: u64 = 76;
    /// Vector operations of the softmax kernel per 16 values of a row (`softmax.cc`): the scan
    /// for the maximum and NaN (6), the exponential with its subtraction, rounding, `-inf`
    /// select, sum and narrowing ([`EXP16_VECTOR_OPS`] + 14), the normalisation's two
    /// products, rounding and narrowing (9), issued one a cycle.
    pub const SOFTMAX_VECTOR_OPS: u64 = 6 + EXP16_VECTOR_OPS + 14 + 9;
    /// Cycles of a softmax row outside its vectors: the two reductions, the tree sum, the
    /// software division `1 / s` (AIE-ML has no scalar floating point) and the tails' scalar
    /// copies: an estimate.
    pub const SOFTMAX_ROW_CYCLES: u64 = 400;
    /// Cores the softmax and GELU designs use (`softmax.py`, `gelu.py`: two a column).
    pub const STREAM_CORES: usize = 8;

    /// Cycles of the busiest core of a softmax dispatch of `rows` rows of `cols` values.
    pub fn softmax_cycles(rows: usize, cols: usize) -> u64 {
        rows.div_ceil(STREAM_CORES) as u64
            * (cols.div_ceil(16) as u64 * SOFTMAX_VECTOR_OPS + SOFTMAX_ROW_CYCLES)
    }

    /// Cycles of the busiest core of a GELU dispatch of `values` values.
    pub fn gelu_cycles(values: usize) -> u64 {
        values.div_ceil(16).div_ceil(STREAM_CORES) as u64 * GELU16_VECTOR_OPS
    }

    /// Vector operations of rounding 16 float32 lanes to bfloat16 with the NaN select
    /// (`gemm_acc_store_bf16`): the rounding's 5, the NaN test's 2, the select and the narrowing.
    pub const ROUND16_VECTOR_OPS: u64 = 9;
    /// Bytes a compute tile's DMA channel moves a cycle: 32 bits, as the shim's (AM020: the
    /// tiles' DMA channels and stream switch ports are 32 bits wide).
    pub const CORE_CHANNEL_BYTES_PER_CYCLE: u64 = 4;
    /// Bytes a shim DMA channel moves a cycle: 32 bits (Riallto's description of the shim tile:
    /// two input and two output DMA channels, each 32 bits wide, as [`super::XDNA1_HOST_BYTES_PER_S`]
    /// cites).
    pub const CHANNEL_BYTES_PER_CYCLE: f64 = 4.0;

    /// The clock of `family`'s cores, Hz.
    pub fn clock_hz(family: DeviceFamily) -> f64 {
        match family {
            DeviceFamily::Xdna1 => super::XDNA1_CLOCK_HZ,
            DeviceFamily::Xdna2 => super::XDNA2_CLOCK_HZ,
        }
    }

    /// The bf16 `mmul` shape of `family` (rows x inner x columns).
    pub fn mmul(family: DeviceFamily) -> (usize, usize, usize) {
        match family {
            DeviceFamily::Xdna1 => super::MMUL_SHAPE,
            DeviceFamily::Xdna2 => super::AIE2P_MMUL_SHAPE,
        }
    }

    /// Bytes a second of one shim DMA channel of `family`.
    pub fn channel_bytes_per_s(family: DeviceFamily) -> f64 {
        CHANNEL_BYTES_PER_CYCLE * clock_hz(family)
    }

    /// Cycles of one k-tile call on an `m x k x n` tile.
    pub fn ktile_cycles(family: DeviceFamily, (m, k, n): (usize, usize, usize)) -> u64 {
        let (r, s, t) = mmul(family);
        let quads = ((m / (2 * r)) * (n / (2 * t))) as u64;
        let macs = 4 * (k / s) as u64 * MMUL_ISSUE_CYCLES;
        let update = 4 * (r * t * 4) as u64 / STORE_BYTES_PER_CYCLE;
        quads * (macs + update + MAC_PIPELINE_CYCLES) + CALL_CYCLES
    }

    /// What follows an output tile's last k-tile in a core.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum TileEnd {
        /// C in float32 as summed.
        None,
        /// The bias added.
        Bias,
        /// The bias added, then GELU.
        BiasGelu,
        /// The accumulator rounded to bfloat16 into the C object.
        Bf16,
    }

    /// Cycles an `m x n` output tile spends outside its k-tiles: zeroing, its end, its C
    /// object's synchronisation, and with `waits` the wait for it to leave the core: a group
    /// of four float32 C objects is all the core's memory holds, so the next group starts only
    /// once the core's DMA channel has sent them ([`CORE_CHANNEL_BYTES_PER_CYCLE`]). Where C
    /// has objects to spare (groups of one, double-buffered; the bfloat16 kernel, which takes
    /// its C objects only after its k-tiles) the transfer overlaps the next tiles' work.
    pub fn tile_cycles(m: usize, n: usize, end: TileEnd, waits: bool) -> u64 {
        let values = (m * n) as u64;
        let stores = values * 4 / STORE_BYTES_PER_CYCLE;
        let vectors = values / 16;
        let (end, c_bytes) = match end {
            TileEnd::None => (0, 4),
            TileEnd::Bias => (stores, 4),
            TileEnd::BiasGelu => (stores + vectors * GELU16_VECTOR_OPS, 4),
            TileEnd::Bf16 => (vectors * ROUND16_VECTOR_OPS, 2),
        };
        let drain = if waits {
            values * c_bytes / CORE_CHANNEL_BYTES_PER_CYCLE
        } else {
            0
        };
        stores + end + TILE_SYNC_CYCLES + drain
    }
}
