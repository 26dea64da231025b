//! The GEMM contract: `C[M,N] = A[M,K] @ B[K,N]` with bfloat16 operands and float32 results,
//! as the whole-array GEMM of mlir-aie computes it on XDNA.
//!
//! # Numerics
//!
//! 1. A (activations) is rounded to bfloat16 at every call, B (weights) once when the plan is
//!    built, both with the contract's [`Rounding`].
//! 2. K is cut into k-tiles of `tile.k` consecutive indices. Within a k-tile, each output
//!    element accumulates the products `a[i,k] * b[k,j]` in float32 in increasing `k`,
//!    starting from +0. The product of two bfloat16 values has at most 16 significant bits,
//!    so it is exact in float32 and a fused or unfused multiply-add gives the same sum.
//! 3. The C buffer starts at +0; the partial sums of the k-tiles are added into it in float32
//!    in increasing tile order.
//! 4. Padding rows, columns and k-indices are zeros and change no sum.
//! 5. An optional bias is added to each output in float32 after the last tile.
//!
//! The hardware's `mmul` unit may sum the 8 products of one step in another order inside
//! its accumulator; a device-versus-emulator test measures that difference.
//!
//! # Layout
//!
//! On XDNA1 the array is 4 x 4 cores, each computing an `m x n` tile of C per k-loop: M is
//! padded to a multiple of `4 m`, N of `4 n`, K of `k`. One dispatch covers `m_chunk` rows
//! of A, chosen so that those rows (bfloat16) fit the four memory tiles: each row block of A
//! then crosses from host memory once, and B streams past it.

use crate::bf16::Rounding;
use crate::hw;

/// The tile one core computes per k-loop step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tile {
    /// Rows of A and C.
    pub m: usize,
    /// The k-tile: reduction indices accumulated before the partial sum is stored.
    pub k: usize,
    /// Columns of B and C.
    pub n: usize,
}

/// How many bfloat16 products stand for one float32 product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// One: both operands rounded to bfloat16 (8 significant bits).
    #[default]
    Bf16,
    /// Three: each operand split into a high and a low bfloat16 part, `x = hi + lo` to 16
    /// significant bits, and `a b` taken as `a_hi b_hi + a_hi b_lo + a_lo b_hi` (the dropped
    /// `a_lo b_lo` is below `2^-16` of the product). See [`split`].
    Bf16x3,
    /// One, as [`Precision::Bf16`], with softmax and GELU in float32 on the host as under
    /// [`Precision::Bf16x3`]: attention's scores come back in float32 and its probabilities
    /// go out rounded to bfloat16 as `P V`'s A (NUMERICS.md 7.4). The bfloat16 softmax's
    /// first step, rounding the scores to 8 significant bits, is most of the error bfloat16
    /// attention makes (`inspect --sensitivity`).
    Bf16Host,
}

crate::named_variants!(Precision { Bf16 => "bf16", Bf16x3 => "bf16x3", Bf16Host => "bf16-host" });

impl Precision {
    /// bfloat16 products per float32 product (1 or 3): the factor on the reduction length
    /// the device runs ([`split`]).
    pub fn passes(self) -> usize {
        match self {
            Precision::Bf16 | Precision::Bf16Host => 1,
            Precision::Bf16x3 => 3,
        }
    }
}

/// The whole-array GEMM contract: tile, array, rounding, memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GemmContract {
    /// Per-core tile.
    pub tile: Tile,
    /// Core rows (M is spread over them).
    pub rows: usize,
    /// Core columns (N is spread over them).
    pub columns: usize,
    /// How operands are rounded to bfloat16.
    pub rounding: Rounding,
    /// Bytes of memory tiles that hold one dispatch's rows of A.
    pub staging_bytes: usize,
    /// bfloat16 products per float32 product.
    pub precision: Precision,
}

impl GemmContract {
    /// XDNA1 (Phoenix, Hawk Point) with mlir-aie's default whole-array tiles.
    pub const XDNA1: GemmContract = GemmContract {
        tile: Tile {
            m: 64,
            k: 64,
            n: 32,
        },
        rows: hw::XDNA1_ROWS,
        columns: hw::XDNA1_COLUMNS,
        rounding: Rounding::NearestEven,
        staging_bytes: hw::XDNA1_COLUMNS * hw::MEM_TILE_BYTES,
        precision: Precision::Bf16,
    };

    /// XDNA2 (Strix, Strix Halo, Krackan, Gorgon) with the whole array: 4 x 8 cores, the same
    /// per-core tiles (64 x 64 x 32, a multiple of AIE2P's 4x8x8 bf16 `mmul`) and k-tile, so
    /// the same numerics as [`GemmContract::XDNA1`]; N pads to 256 columns instead of 128, and
    /// a dispatch stages its A in 8 memory tiles.
    pub const XDNA2: GemmContract = GemmContract {
        tile: Tile {
            m: 64,
            k: 64,
            n: 32,
        },
        rows: hw::XDNA2_ROWS,
        columns: hw::XDNA2_COLUMNS,
        rounding: Rounding::NearestEven,
        staging_bytes: hw::XDNA2_COLUMNS * hw::MEM_TILE_BYTES,
        precision: Precision::Bf16,
    };

    /// The whole-array contract of `family`.
    pub fn for_family(family: hw::DeviceFamily) -> GemmContract {
        match family {
            hw::DeviceFamily::Xdna1 => GemmContract::XDNA1,
            hw::DeviceFamily::Xdna2 => GemmContract::XDNA2,
        }
    }

    /// The family whose array this contract uses.
    pub fn family(&self) -> hw::DeviceFamily {
        if self.columns == hw::XDNA2_COLUMNS {
            hw::DeviceFamily::Xdna2
        } else {
            hw::DeviceFamily::Xdna1
        }
    }

    /// The same contract with another rounding of the operands.
    pub fn with_rounding(self, rounding: Rounding) -> GemmContract {
        GemmContract { rounding, ..self }
    }

    /// The same contract with another precision.
    pub fn with_precision(self, precision: Precision) -> GemmContract {
        GemmContract { precision, ..self }
    }

    /// How a `[m, k] @ [k, n]` product is padded and cut into dispatches. Under
    /// [`Precision::Bf16x3`] the device multiplies the expanded operands of [`split`]: K
    /// padded to the k-tile, three times.
    pub fn layout(&self, m: usize, k: usize, n: usize) -> GemmLayout {
        let k_pad = k.div_ceil(self.tile.k).max(1) * self.tile.k;
        self.layout_with_k_pad(m, k, n, k_pad * self.precision.passes())
    }

    /// Whether softmax and GELU run on the device. Under [`Precision::Bf16x3`] and
    /// [`Precision::Bf16Host`] they are float32 kernels (NUMERICS.md 7), and run on the host's CPU with `cpu_math`'s numerics: an
    /// AIE2 core multiplies bfloat16 natively and float32 only as a sequence of bfloat16
    /// products chosen by its compiler, whose rounding no kernel of this contract states yet.
    /// The GELU epilogue of a GEMM then runs on the host after the GEMM's bias.
    pub fn softmax_gelu_on_device(&self) -> bool {
        self.precision == Precision::Bf16
    }

    /// [`GemmContract::layout`] with K padded to `k_pad` rather than to the next k-tile: for
    /// an A operand that already lives on the device at a wider row stride (attention's
    /// probabilities, as wide as the scores' padded N). The extra k-indices are zeros.
    ///
    /// Panics if `k_pad` is not a multiple of the k-tile at least `k`.
    pub fn layout_with_k_pad(&self, m: usize, k: usize, n: usize, k_pad: usize) -> GemmLayout {
        assert!(
            k_pad >= k.max(1) && k_pad.is_multiple_of(self.tile.k),
            "K = {k} cannot be padded to {k_pad} (k-tile {})",
            self.tile.k
        );
        let row_block = self.rows * self.tile.m;
        let col_block = self.columns * self.tile.n;
        let m_pad = m.div_ceil(row_block).max(1) * row_block;
        let n_pad = n.div_ceil(col_block).max(1) * col_block;
        // The most rows whose A fits the memory tiles, whole row blocks, at least one; then
        // as few dispatches as that allows, their rows shared out evenly (whole row blocks
        // again), so that the last dispatch does not carry rows of padding for nothing.
        let fit = self.staging_bytes / (k_pad * 2);
        let most = ((fit / row_block) * row_block).clamp(row_block, m_pad);
        let dispatches = m_pad.div_ceil(most);
        let m_chunk = (m_pad / row_block).div_ceil(dispatches) * row_block;
        GemmLayout {
            m,
            k,
            n,
            m_pad,
            k_pad,
            n_pad,
            m_chunk,
            dispatches,
            precision: self.precision,
        }
    }
}

/// Output tiles a core accumulates at once with float32 C (`gemm.py`'s `GROUP`): each k-tile
/// of A it receives serves them all, so A crosses from memory once per group of column tiles
/// rather than once per column tile. Four is what a core's 64 KiB hold: A and B double-buffered
/// (16 + 8 KiB), four C tiles of 8 KiB, the bias stash and the stack.
pub const GROUP: usize = 4;
/// The same for bfloat16 C (attention's scores): three, the float32 accumulator tiles of
/// `gemm_bf16.o` (24 KiB) being the core's own beside its three bfloat16 C objects.
pub const GROUP_BF16: usize = 3;

/// What one call of the GEMM design moves and computes (every dispatch of a layout): the
/// bytes its shim DMAs read and write, and the cycles of each core (all cores of the array
/// do the same work at once). `kernels/aie/gemm/gemm.py` is the design; its access patterns
/// move exactly these bytes (the hostcheck counts them).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dataflow {
    /// Rows of 256 (4 core rows x 64) in one dispatch.
    pub row_blocks: usize,
    /// Column tiles of one core column.
    pub col_tiles: usize,
    /// k-tiles of the reduction.
    pub k_tiles: usize,
    /// Output tiles a core accumulates at once ([`GROUP`], [`GROUP_BF16`]).
    pub group: usize,
    /// Whether the groups are of row blocks (a core's tiles of one column tile in up to
    /// `group` row blocks, each k-tile of B serving them all: B read once per group of row
    /// blocks, A once per column tile) rather than of column tiles (A read once per group of
    /// column tiles, B once per row block). Chosen per shape for fewer bytes read, and only
    /// without an epilogue.
    pub rows_grouped: bool,
    /// B objects the bias occupies at the head of each column's B stream (0 without a bias).
    pub bias_parts: usize,
    /// Bytes of A read: each row block once per group of column tiles (per column tile with
    /// groups of row blocks).
    pub a_bytes: usize,
    /// Bytes of B read: once per row block (per group of row blocks).
    pub b_bytes: usize,
    /// Bytes of the bias read (whole B objects, the slice repeated to fill them).
    pub bias_bytes: usize,
    /// Bytes of C written: once.
    pub c_bytes: usize,
    /// Cycles of one core.
    pub core_cycles: u64,
    /// Predicted time (s): per dispatch the longest of compute, reading and writing (the
    /// objects are double-buffered, so they overlap), plus the first objects' fill and the
    /// last group's drain, which do not.
    pub seconds: f64,
    /// Of which the reading and writing alone (s), the longer of the two a dispatch.
    pub dma_seconds: f64,
    /// Of which the compute alone (s).
    pub compute_seconds: f64,
}

impl Dataflow {
    /// Every byte the shim DMAs move.
    pub fn bytes(&self) -> usize {
        self.a_bytes + self.b_bytes + self.bias_bytes + self.c_bytes
    }
}

impl GemmContract {
    /// The design's work for one call of `layout` whose output tiles end with `end`.
    pub fn dataflow(&self, layout: &GemmLayout, end: hw::cost::TileEnd) -> Dataflow {
        let group = if end == hw::cost::TileEnd::Bf16 {
            GROUP_BF16
        } else {
            GROUP
        };
        self.dataflow_with_group(layout, end, group)
    }

    /// [`GemmContract::dataflow`] with groups of `group` output tiles: 1 is mlir-aie's
    /// whole-array design, which reads A once per column tile (the cost model applied to
    /// another design, for comparison with published measurements of it).
    pub fn dataflow_with_group(
        &self,
        layout: &GemmLayout,
        end: hw::cost::TileEnd,
        group: usize,
    ) -> Dataflow {
        let group = group.max(1);
        let row_blocks = layout.m_chunk / (self.rows * self.tile.m);
        let col_tiles = layout.n_pad / (self.columns * self.tile.n);
        let a_once = layout.m_chunk * layout.k_pad * 2;
        let b_once = layout.weight_bytes();
        // Groups of column tiles share A; groups of row blocks (the kind without an epilogue
        // only, whose tiles need no bias cursor) share B instead: whichever reads less.
        let (a_cols, b_cols) = (a_once * col_tiles.div_ceil(group), b_once * row_blocks);
        let (a_rows, b_rows) = (a_once * col_tiles, b_once * row_blocks.div_ceil(group));
        let rows_grouped = end == hw::cost::TileEnd::None && a_rows + b_rows < a_cols + b_cols;
        let reads = if rows_grouped {
            (a_rows, b_rows)
        } else {
            (a_cols, b_cols)
        };
        self.timed(layout, end, group, rows_grouped, reads)
    }

    /// A bound on what reading fewer bytes could gain: [`GemmContract::dataflow`]'s cores,
    /// groups and DMA lanes, with A and B each read from memory once a call (B once over all
    /// the call's dispatches); the bias, C, and each dispatch's fill and drain as the design
    /// moves them. The design reads more because only a group of output tiles stays in a
    /// core's memory (`inspect --published` prints both per product).
    pub fn dataflow_operands_once(&self, layout: &GemmLayout, end: hw::cost::TileEnd) -> Dataflow {
        let design = self.dataflow(layout, end);
        let a_once = layout.m_chunk * layout.k_pad * 2;
        let b_once = layout.weight_bytes();
        // Each dispatch's share of B, rounded up: the timing's bytes may exceed `b_bytes` by
        // less than one byte a dispatch.
        let per_dispatch = (a_once, b_once.div_ceil(layout.dispatches));
        Dataflow {
            b_bytes: b_once,
            ..self.timed(layout, end, design.group, design.rows_grouped, per_dispatch)
        }
    }

    /// The design's cycles and time for one call of `layout` whose dispatches each read
    /// `reads` bytes of A and B (the bias and C as the design moves them).
    fn timed(
        &self,
        layout: &GemmLayout,
        end: hw::cost::TileEnd,
        group: usize,
        rows_grouped: bool,
        (a, b): (usize, usize),
    ) -> Dataflow {
        use hw::cost;
        let family = self.family();
        let Tile { m, k, n } = self.tile;
        let row_blocks = layout.m_chunk / (self.rows * m);
        let col_tiles = layout.n_pad / (self.columns * n);
        let k_tiles = layout.k_pad / k;
        let bf16_out = end == cost::TileEnd::Bf16;
        let bias = matches!(end, cost::TileEnd::Bias | cost::TileEnd::BiasGelu);
        let object = k * n;
        let bias_parts = if bias {
            let units = col_tiles * 2 * n;
            units / gcd(units, object)
        } else {
            0
        };
        let c_value = if bf16_out { 2 } else { 4 };
        let d = layout.dispatches;
        let bias_b = self.columns * bias_parts * object * 2;
        let c = layout.m_chunk * layout.n_pad * c_value;
        let tiles = (row_blocks * col_tiles) as u64;
        let cycles = tiles * k_tiles as u64 * cost::ktile_cycles(family, (m, k, n))
            + tiles * cost::tile_cycles(m, n, end, !bf16_out && group > 1)
            + (bias_parts * object / 2) as u64;
        let clock = cost::clock_hz(family);
        let channel = cost::channel_bytes_per_s(family);
        let host = family.host_bytes_per_s();
        // A through the shims of the first `rows` columns, B and the bias through every
        // column's, C out of every column's; each direction at most the host's rate.
        let a_lanes = self.rows.min(self.columns) as f64 * channel;
        let lanes = self.columns as f64 * channel;
        let read = (a as f64 / a_lanes)
            .max((b + bias_b) as f64 / lanes)
            .max((a + b + bias_b) as f64 / host);
        let write = (c as f64 / lanes).max(c as f64 / host);
        let compute = cycles as f64 / clock;
        let fill = ((m * k + k * n) * 2) as f64 / channel;
        // The last group's C tiles leave after its last k-tile, through one channel a column.
        let last = group.min(if rows_grouped { row_blocks } else { col_tiles });
        let drain = (last * self.rows * m * n * c_value) as f64 / channel;
        let per_dispatch = compute.max(read).max(write) + fill + drain;
        Dataflow {
            row_blocks,
            col_tiles,
            k_tiles,
            group,
            rows_grouped,
            bias_parts,
            a_bytes: a * d,
            b_bytes: b * d,
            bias_bytes: bias_b * d,
            c_bytes: c * d,
            core_cycles: cycles * d as u64,
            seconds: per_dispatch * d as f64,
            dma_seconds: read.max(write) * d as f64,
            compute_seconds: compute * d as f64,
        }
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The padded shape of one GEMM and its cut into dispatches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GemmLayout {
    /// Rows of A and C.
    pub m: usize,
    /// The reduction length.
    pub k: usize,
    /// Columns of B and C.
    pub n: usize,
    /// `m` padded to the array's row block.
    pub m_pad: usize,
    /// The reduction length on the device: `k` padded to the k-tile, three times that under
    /// [`Precision::Bf16x3`] (the expanded operands of [`split`]).
    pub k_pad: usize,
    /// `n` padded to the array's column block.
    pub n_pad: usize,
    /// Rows of A per dispatch.
    pub m_chunk: usize,
    /// Dispatches per call.
    pub dispatches: usize,
    /// The contract's precision (its factor on K is in `k_pad` already).
    pub precision: Precision,
}

impl GemmLayout {
    /// Rows of A the device computes per call: `m_chunk` a dispatch, the rows past `m_pad`
    /// of a last dispatch that is not full included (zeros sent, results dropped).
    pub fn rows_sent(&self) -> usize {
        self.m_chunk * self.dispatches
    }

    /// Bytes sent to the device per call: A in bfloat16 ([`GemmLayout::rows_sent`] rows),
    /// plus B when it is an activation (attention's two-operand products) rather than a
    /// weight uploaded once.
    pub fn bytes_in(&self, b_is_weight: bool) -> usize {
        let a = self.rows_sent() * self.k_pad * 2;
        if b_is_weight {
            a
        } else {
            a + self.weight_bytes()
        }
    }

    /// Bytes read back per call: C in float32, every row of every dispatch.
    pub fn bytes_out(&self) -> usize {
        self.rows_sent() * self.n_pad * 4
    }

    /// Bytes of B in bfloat16, uploaded once for a weight.
    pub fn weight_bytes(&self) -> usize {
        self.k_pad * self.n_pad * 2
    }

    /// Bytes of a bias in float32, uploaded once with its weight.
    pub fn bias_bytes(&self) -> usize {
        self.n_pad * 4
    }

    /// Bytes uploaded once for a weight and, with `bias`, its bias.
    pub fn upload_bytes(&self, bias: bool) -> usize {
        self.weight_bytes() + if bias { self.bias_bytes() } else { 0 }
    }

    /// Useful floating-point operations (padding excluded).
    pub fn flops(&self) -> u64 {
        2 * self.m as u64 * self.k as u64 * self.n as u64
    }

    /// Floating-point operations the array performs, padding included (every row of every
    /// dispatch).
    pub fn padded_flops(&self) -> u64 {
        2 * (self.rows_sent() * self.k_pad * self.n_pad) as u64
    }
}

/// The operands of a [`Precision::Bf16x3`] product as one bfloat16 product: its numerics.
///
/// With `b(v)` the contract's rounding to bfloat16, each operand value `x` splits into
/// `hi = b(x)` and `lo = b(x - hi)` (the subtraction is exact in float32). The product
/// `A [m, k] @ B [k, n]` is then the contract's own bfloat16 GEMM over a reduction three times
/// as long, `K3 = 3 k_pad` (`k_pad`: `k` padded to the k-tile), of the expanded operands
/// `A' = [A_hi | A_lo | A_hi]` (three blocks of `k_pad` columns) and `B' = [B_lo; B_hi; B_hi]`
/// (three blocks of `k_pad` rows), zeros past `k` in each block. Its k-tiles, each summed from
/// `+0` and added into C in order as every k-tile is, are therefore first all the `hi lo`
/// tiles, then all the `lo hi` tiles, then the `hi hi` tiles: the two small corrections
/// (about `2^-8` of the product) gather in C before the large terms arrive, so that C rounds
/// at the large terms' magnitude only as often as a bfloat16 product's C does. Every bfloat16
/// product is exact in float32, as in the plain contract. The GEMM kernels of the plain
/// contract run it as they are, over operands the host expands; only the shapes (K three
/// times as long) are new.
pub mod split {
    use super::{GemmContract, Precision};
    use crate::bf16;

    /// The contract the expanded operands are multiplied under: the same tiles, bfloat16
    /// precision (the parts are bfloat16 already: rounding them changes nothing).
    pub fn expanded(contract: &GemmContract) -> GemmContract {
        GemmContract {
            precision: Precision::Bf16,
            ..*contract
        }
    }

    /// `(hi, lo)` of `x` under the contract's rounding.
    pub fn parts(x: f32, contract: &GemmContract) -> (f32, f32) {
        let hi = bf16::round(x, contract.rounding);
        (hi, bf16::round(x - hi, contract.rounding))
    }

    /// The expanded reduction length of `k`: whole k-tiles (at least one, as
    /// [`GemmContract::layout`] pads), three times.
    pub fn expanded_k(contract: &GemmContract, k: usize) -> usize {
        k.div_ceil(contract.tile.k).max(1) * contract.tile.k * 3
    }

    /// A `[m, k]` as `[m, expanded_k]`: each row's high parts, its low parts, its high parts
    /// again, each block `expanded_k / 3` wide (zeros past `k`).
    pub fn expand_a(contract: &GemmContract, a: &[f32], m: usize, k: usize) -> Vec<f32> {
        let k3 = expanded_k(contract, k);
        let k_pad = k3 / 3;
        let mut out = vec![0.0; m * k3];
        if k == 0 {
            return out;
        }
        for (row, dst) in a.chunks_exact(k).zip(out.chunks_exact_mut(k3)) {
            for (i, &x) in row.iter().enumerate() {
                let (hi, lo) = parts(x, contract);
                dst[i] = hi;
                dst[k_pad + i] = lo;
                dst[2 * k_pad + i] = hi;
            }
        }
        out
    }

    /// B `[k, n]` as `[expanded_k, n]`: its low parts, its high parts, its high parts again,
    /// each block `expanded_k / 3` rows (zero rows past `k`).
    pub fn expand_b(contract: &GemmContract, b: &[f32], k: usize, n: usize) -> Vec<f32> {
        let k3 = expanded_k(contract, k);
        let k_pad = k3 / 3;
        let mut out = vec![0.0; k3 * n];
        if n == 0 {
            return out;
        }
        for (i, row) in b.chunks_exact(n).enumerate() {
            for (j, &x) in row.iter().enumerate() {
                let (hi, lo) = parts(x, contract);
                out[i * n + j] = lo;
                out[(k_pad + i) * n + j] = hi;
                out[(2 * k_pad + i) * n + j] = hi;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The split's parts sum to the value to 16 significant bits, and a product through the
    /// expanded operands is the sum of the three parts' products in the stated order.
    #[test]
    fn bf16x3_splits_and_orders_as_stated() {
        let c = GemmContract::XDNA1.with_precision(Precision::Bf16x3);
        for x in [1.0f32 / 3.0, -7.123_456, 1.0e-20, 3.0e30, 0.0] {
            let (hi, lo) = split::parts(x, &c);
            assert!(((hi as f64 + lo as f64) - x as f64).abs() <= x.abs() as f64 * 2f64.powi(-16));
        }
        // K = 70: two k-tiles (64 + 6), the second padded with zeros; blocks of 128.
        let (m, k) = (2, 70);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let e = split::expand_a(&c, &a, m, k);
        assert_eq!(e.len(), m * 384);
        let (hi, lo) = split::parts(a[k + 65], &c);
        assert_eq!(
            (e[384 + 65], e[384 + 128 + 65], e[384 + 256 + 65]),
            (hi, lo, hi)
        );
        assert_eq!(
            (e[384 + 100], e[384 + 128 + 100], e[384 + 383]),
            (0.0, 0.0, 0.0)
        );
        let b: Vec<f32> = (0..k).map(|i| (i as f32 * 0.11).cos()).collect();
        let eb = split::expand_b(&c, &b, k, 1);
        let (bh, bl) = split::parts(b[3], &c);
        assert_eq!((eb[3], eb[131], eb[259]), (bl, bh, bh));
        assert_eq!(split::expanded(&c).tile.k, 64);
    }

    #[test]
    fn whisper_shapes_pad_and_chunk() {
        let c = GemmContract::XDNA1;
        // base's QKV projection: [1500, 512] @ [512, 512].
        let l = c.layout(1500, 512, 512);
        assert_eq!((l.m_pad, l.k_pad, l.n_pad), (1536, 512, 512));
        assert_eq!((l.m_chunk, l.dispatches), (1536, 1));
        // large's FFN down-projection: K = 5120 rows of A are 10 KiB each: 204 fit in 2 MiB,
        // so 0 whole 256-row blocks; one block per dispatch is the floor.
        let l = c.layout(1500, 5120, 1280);
        assert_eq!((l.m_chunk, l.dispatches), (256, 6));
        // tiny's FFN down-projection: K = 1536, 682 rows fit: 512-row dispatches.
        let l = c.layout(1500, 1536, 384);
        assert_eq!((l.m_chunk, l.dispatches, l.n_pad), (512, 3, 384));
        // small's projections: K = 768, 1365 rows fit, at most 1280 (5 blocks) a dispatch:
        // two dispatches, shared as 3 blocks each, not 1280 + 1280 rows for 1536.
        let l = c.layout(1500, 768, 768);
        assert_eq!((l.m_chunk, l.dispatches, l.rows_sent()), (768, 2, 1536));
        // medium's: K = 1024, 1024 rows fit (4 blocks): 2 dispatches of 3 blocks.
        let l = c.layout(1500, 1024, 1024);
        assert_eq!((l.m_chunk, l.dispatches), (768, 2));
        // Seven blocks, at most two a dispatch: four dispatches of two, one block of zeros
        // sent, and counted.
        let l = c.layout(1700, 1536, 128);
        assert_eq!((l.m_pad, l.m_chunk, l.dispatches), (1792, 512, 4));
        assert_eq!(l.rows_sent(), 2048);
        assert_eq!(l.bytes_out(), 2048 * 128 * 4);
        // Attention's QK^T per head: [1500, 64] @ [64, 1500].
        let l = c.layout(1500, 64, 1500);
        assert_eq!((l.k_pad, l.n_pad), (64, 1536));
        assert_eq!(l.flops(), 2 * 1500 * 64 * 1500);
        assert_eq!(l.bytes_in(false), 1536 * 64 * 2 + 64 * 1536 * 2);
        assert_eq!(l.bytes_out(), 1536 * 1536 * 4);
        // A crosses once per group of 4 column tiles of 128 columns (12 tiles: 3 groups), B
        // once per 256 rows.
        assert_eq!(
            c.dataflow(&l, hw::cost::TileEnd::None).bytes(),
            1536 * 64 * 2 * 3 + 64 * 1536 * 2 * 6 + 1536 * 1536 * 4
        );
    }

    /// The design's bytes per part: A once per group of column tiles (the last group
    /// smaller), groups of three for bfloat16 C; the bias in whole B objects; and its cycles grow
    /// with the k-tiles, the GELU epilogue costing more than the bias alone.
    #[test]
    fn dataflow_counts_groups_and_the_bias() {
        use hw::cost::TileEnd;
        let c = GemmContract::XDNA1;
        // tiny's FFN up-projection, 1536 x 384 x 1536: 12 column tiles a core column, 3
        // groups; one dispatch of 6 row blocks.
        let l = c.layout(1500, 384, 1536);
        assert_eq!((l.m_chunk, l.dispatches), (1536, 1));
        let f = c.dataflow(&l, TileEnd::BiasGelu);
        assert_eq!(
            (f.row_blocks, f.col_tiles, f.k_tiles, f.group),
            (6, 12, 6, 4)
        );
        assert_eq!(f.a_bytes, 1536 * 384 * 2 * 3);
        assert_eq!(f.b_bytes, 384 * 1536 * 2 * 6);
        // A column's slice is 12 x 32 floats = 768 halves; an object is 64 x 32 = 2048:
        // 3 objects hold 8 slices exactly.
        assert_eq!((f.bias_parts, f.bias_bytes), (3, 4 * 3 * 2048 * 2));
        assert_eq!(f.c_bytes, 1536 * 1536 * 4);
        // 10 column tiles: groups of 4, 4, 2.
        let l = c.layout(256, 64, 1280);
        let f = c.dataflow(&l, TileEnd::None);
        assert_eq!(f.a_bytes, 256 * 64 * 2 * 3);
        let g = c.dataflow(&l, TileEnd::Bf16);
        assert_eq!(
            (g.group, g.a_bytes, g.c_bytes),
            (3, 256 * 64 * 2 * 4, 256 * 1280 * 2)
        );
        let bias = c.dataflow(&l, TileEnd::Bias);
        let gelu = c.dataflow(&l, TileEnd::BiasGelu);
        assert!(gelu.core_cycles > bias.core_cycles && bias.core_cycles > f.core_cycles);
        // Nine k-tiles more for each of the core's 10 output tiles: 9 x 10 k-tile calls of 32
        // quads of 4 x 8 mmul cycles, 8 for the accumulators' stores (4 x 64 bytes at 32 a
        // cycle) and 8 of pipeline, plus 32 for the call: 1568 cycles each.
        let long = c.dataflow(&c.layout(256, 640, 1280), TileEnd::None);
        assert_eq!(long.core_cycles - f.core_cycles, 9 * 10 * 1568);
        assert!(f.seconds >= f.compute_seconds.max(f.dma_seconds));
    }

    /// The bound of reading each operand once: A's rows and B each once a call, the bias and
    /// C as the design moves them, the cores' cycles unchanged; never slower than the design,
    /// and equal to it on a dispatch whose design reads each operand once already.
    #[test]
    fn operands_once_is_a_bound_on_the_design() {
        use hw::cost::TileEnd;
        for c in [GemmContract::XDNA1, GemmContract::XDNA2] {
            for (m, k, n) in [
                (1500, 1280, 1280),
                (1500, 1280, 5120),
                (1500, 5120, 1280),
                (1500, 64, 1500),
            ] {
                for end in [
                    TileEnd::None,
                    TileEnd::Bias,
                    TileEnd::BiasGelu,
                    TileEnd::Bf16,
                ] {
                    let l = c.layout(m, k, n);
                    let (design, once) = (c.dataflow(&l, end), c.dataflow_operands_once(&l, end));
                    assert_eq!(once.a_bytes, l.rows_sent() * l.k_pad * 2);
                    assert_eq!(once.b_bytes, l.k_pad * l.n_pad * 2);
                    assert_eq!(
                        (once.bias_bytes, once.c_bytes, once.core_cycles),
                        (design.bias_bytes, design.c_bytes, design.core_cycles)
                    );
                    assert!(once.a_bytes <= design.a_bytes && once.b_bytes <= design.b_bytes);
                    assert!(once.dma_seconds <= design.dma_seconds);
                    assert!(once.seconds <= design.seconds);
                }
            }
        }
        // One row block and four column tiles a core column (512 columns on XDNA1): the design
        // reads A once (one group) and B once (one row block).
        let c = GemmContract::XDNA1;
        let l = c.layout(256, 640, 512);
        let (design, once) = (
            c.dataflow(&l, TileEnd::Bias),
            c.dataflow_operands_once(&l, TileEnd::Bias),
        );
        assert_eq!((design.row_blocks, design.col_tiles), (1, 4));
        assert_eq!(once, design);
        // large's FFN down-projection on XDNA2, DMA-bound: B crosses in each of its 6
        // dispatches, and A twice (5 column tiles: groups of 4 and 1), where once each is
        // strictly faster.
        let c = GemmContract::XDNA2;
        let l = c.layout(1500, 5120, 1280);
        let (design, once) = (
            c.dataflow(&l, TileEnd::Bias),
            c.dataflow_operands_once(&l, TileEnd::Bias),
        );
        assert_eq!(design.b_bytes, 6 * once.b_bytes);
        assert_eq!(design.a_bytes, 2 * once.a_bytes);
        assert!(design.dma_seconds > design.compute_seconds);
        assert!(once.seconds < design.seconds);
    }

    /// XDNA2's whole array: 256-row and 256-column blocks, 4 MiB of staging; the numerics'
    /// k-tile is XDNA1's.
    #[test]
    fn xdna2_pads_to_its_array() {
        let c = GemmContract::XDNA2;
        // tiny's projections: N = 384 pads to 512 (XDNA1: 384).
        let l = c.layout(1500, 384, 384);
        assert_eq!(
            (l.m_pad, l.k_pad, l.n_pad, l.dispatches),
            (1536, 384, 512, 1)
        );
        // large's FFN down-projection: 409 rows of K = 5120 fit 4 MiB: one 256-row block a
        // dispatch, as on XDNA1 with 2 MiB.
        let l = c.layout(1500, 5120, 1280);
        assert_eq!((l.m_chunk, l.dispatches), (256, 6));
        // base's FFN down-projection: K = 2048 fits 1024 rows: two dispatches of 768.
        let l = c.layout(1500, 2048, 512);
        assert_eq!((l.m_chunk, l.dispatches), (768, 2));
        assert_eq!(c.tile.k, GemmContract::XDNA1.tile.k);
        assert_eq!(c.family(), hw::DeviceFamily::Xdna2);
        assert_eq!(GemmContract::XDNA1.family(), hw::DeviceFamily::Xdna1);
    }

    #[test]
    fn tiny_shapes_still_pad_to_one_block() {
        let l = GemmContract::XDNA1.layout(1, 1, 1);
        assert_eq!((l.m_pad, l.k_pad, l.n_pad, l.dispatches), (256, 64, 128, 1));
    }
}
