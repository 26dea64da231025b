//! The kernel contract computed on the CPU, with exactly the numerics the contract specifies.
//!
//! [`gemm`] follows [`crate::gemm`]'s numerics to the bit: the accumulation order inside
//! each k-tile and across k-tiles is the contract's, whatever the blocking used here for
//! speed (blocking reorders which outputs are computed when, never the sums of one output).

use crate::bf16::{self, Rounding};
use crate::gemm::GemmContract;

/// Columns of C computed together by the micro-kernel: two 8-lane AVX2 vectors, or one
/// 16-lane AVX-512 vector.
const NR: usize = 16;
/// Rows of C computed together by the AVX2 (and portable) micro-kernel: 6 x 2 accumulator
/// vectors out of 16 registers.
const MR: usize = 6;
/// Rows of C computed together by the AVX-512 micro-kernel: 12 accumulators out of 32.
const MR_AVX512: usize = 12;
/// Rows of A each task pads to: a multiple of both micro-kernels' rows.
const ROW_PAD: usize = 12;

thread_local! {
    static A_BLOCK: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// B rounded to bfloat16 once and packed in panels of `NR` columns, `k`-major within a
/// panel, zero-padded to whole panels: the layout the micro-kernel streams.
#[derive(Debug, Clone)]
pub struct PackedB {
    k: usize,
    n: usize,
    k_tile: usize,
    panels: Vec<f32>,
}

impl PackedB {
    /// Rounds and packs a row-major `[k, n]` matrix under `contract`.
    pub fn new(contract: &GemmContract, b: &[f32], k: usize, n: usize) -> PackedB {
        assert_eq!(b.len(), k * n, "B holds k * n values");
        let panels_n = n.div_ceil(NR);
        let mut panels = vec![0.0; panels_n * k * NR];
        for p in 0..panels_n {
            for kk in 0..k {
                for j in 0..NR.min(n - p * NR) {
                    panels[(p * k + kk) * NR + j] =
                        bf16::round(b[kk * n + p * NR + j], contract.rounding);
                }
            }
        }
        PackedB {
            k,
            n,
            k_tile: contract.tile.k,
            panels,
        }
    }

    /// Packs a row-major `[k, n]` matrix as it is, in float32, for [`gemm_f32`]: one k-tile
    /// spans the whole reduction.
    pub fn plain(b: &[f32], k: usize, n: usize) -> PackedB {
        assert_eq!(b.len(), k * n, "B holds k * n values");
        let panels_n = n.div_ceil(NR);
        let mut panels = vec![0.0; panels_n * k * NR];
        for p in 0..panels_n {
            let cols = NR.min(n - p * NR);
            for kk in 0..k {
                panels[(p * k + kk) * NR..][..cols].copy_from_slice(&b[kk * n + p * NR..][..cols]);
            }
        }
        PackedB {
            k,
            n,
            k_tile: k.max(1),
            panels,
        }
    }

    /// [`PackedB::plain`] of a `[k, n]` matrix read a row at a time: `row(kk, out)` writes
    /// row `kk`'s `n` values into `out`.
    pub fn plain_with(k: usize, n: usize, row: impl Fn(usize, &mut [f32])) -> PackedB {
        let panels_n = n.div_ceil(NR);
        let mut panels = vec![0.0; panels_n * k * NR];
        let mut values = vec![0.0; n];
        for kk in 0..k {
            row(kk, &mut values);
            for (p, run) in values.chunks(NR).enumerate() {
                panels[(p * k + kk) * NR..][..run.len()].copy_from_slice(run);
            }
        }
        PackedB {
            k,
            n,
            k_tile: k.max(1),
            panels,
        }
    }

    /// [`PackedB::plain`] of the transpose of `bt`, a row-major `[n, k]` matrix (a linear
    /// layer's weight as PyTorch stores it): each panel is 16 rows of `bt` interleaved.
    pub fn plain_transposed(bt: &[f32], k: usize, n: usize) -> PackedB {
        assert_eq!(bt.len(), k * n, "B^T holds n * k values");
        let panels_n = n.div_ceil(NR);
        let mut panels = vec![0.0; panels_n * k * NR];
        for (p, panel) in panels.chunks_exact_mut(k * NR).enumerate() {
            for j in 0..NR.min(n - p * NR) {
                let row = &bt[(p * NR + j) * k..][..k];
                for (kk, v) in row.iter().enumerate() {
                    panel[kk * NR + j] = *v;
                }
            }
        }
        PackedB {
            k,
            n,
            k_tile: k.max(1),
            panels,
        }
    }

    /// Panels of `NR` columns already laid out (`panels[(p * k + kk) * NR + j]`, zero past
    /// column `n`), for a float32 product.
    pub(crate) fn from_panels(k: usize, n: usize, panels: Vec<f32>) -> PackedB {
        assert_eq!(panels.len(), n.div_ceil(NR) * k * NR, "whole panels of B");
        PackedB {
            k,
            n,
            k_tile: k.max(1),
            panels,
        }
    }

    /// Columns of one panel.
    pub const PANEL: usize = NR;

    /// The reduction length.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Columns.
    pub fn n(&self) -> usize {
        self.n
    }
}

/// `c = a @ b (+ bias)` under the contract `b` was packed with: `a` is `[m, k]` row-major
/// float32 (rounded to bfloat16 here), `c` is `[m, n]` row-major. Rows are spread over
/// rayon's current pool.
pub fn gemm(
    rounding: Rounding,
    a: &[f32],
    m: usize,
    b: &PackedB,
    bias: Option<&[f32]>,
    c: &mut [f32],
) {
    let (k, n) = (b.k, b.n);
    assert_operands(a, m, b, bias, c);
    over_row_tasks(a, m, k, n, c, |a, rows, c| {
        gemm_rows(rounding, a, rows, b, bias, c)
    });
}

/// A product's operands fill their shapes: A `[rows, k]`, C `[rows, n]`, the bias `n`.
fn assert_operands(a: &[f32], rows: usize, b: &PackedB, bias: Option<&[f32]>, c: &[f32]) {
    assert_eq!(a.len(), rows * b.k, "A holds rows * k values");
    assert_eq!(c.len(), rows * b.n, "C holds rows * n values");
    if let Some(bias) = bias {
        assert_eq!(bias.len(), b.n, "the bias holds n values");
    }
}

/// Spreads the rows of `a` (`[m, k]`) and `c` (`[m, n]`) over rayon's current pool in
/// blocks large enough to amortise a task, small enough to balance two cores: `f(a_rows,
/// rows, c_rows)` for each block.
fn over_row_tasks(
    a: &[f32],
    m: usize,
    k: usize,
    n: usize,
    c: &mut [f32],
    f: impl Fn(&[f32], usize, &mut [f32]) + Sync,
) {
    if m == 0 || n == 0 {
        return;
    }
    let rows_per_task = (ROW_PAD * 8).min(m.div_ceil(ROW_PAD) * ROW_PAD);
    use rayon::prelude::*;
    c.par_chunks_mut(rows_per_task * n)
        .enumerate()
        .for_each(|(t, c_block)| {
            let row0 = t * rows_per_task;
            let rows = c_block.len() / n;
            f(&a[row0 * k..(row0 + rows) * k], rows, c_block);
        });
}

/// [`gemm`] on the calling thread only, for `rows` rows of A (`[rows, k]`): the same bits
/// (each row's sums do not depend on the others).
pub fn gemm_rows(
    rounding: Rounding,
    a: &[f32],
    rows: usize,
    b: &PackedB,
    bias: Option<&[f32]>,
    c: &mut [f32],
) {
    let k = b.k;
    assert_operands(a, rows, b, bias, c);
    // The rows of A, rounded, padded to whole micro-tiles with zero rows, in a buffer each
    // thread keeps: allocating it per task would cost a page fault per 4 KiB at Whisper's
    // sizes.
    A_BLOCK.with_borrow_mut(|a_block| {
        pack_a(a, rows, k, micro_rows(), rounding, a_block);
        block(a_block, rows, b, bias, c);
    });
}

/// `c = a @ b (+ bias)`, then GELU ([`crate::cpu_math::gelu`]) with `gelu`, in plain float32 for
/// `b` packed by [`PackedB::plain`]: each output is one float32 sum over the whole reduction
/// (fused multiply-adds where the CPU has them), then the bias, then the GELU while the tile is
/// still in registers. Rows are spread over rayon's current pool.
pub fn gemm_f32(a: &[f32], m: usize, b: &PackedB, bias: Option<&[f32]>, gelu: bool, c: &mut [f32]) {
    let (k, n) = (b.k, b.n);
    assert_operands(a, m, b, bias, c);
    over_row_tasks(a, m, k, n, c, |a, rows, c| {
        gemm_f32_rows(a, rows, b, bias, gelu, c)
    });
}

/// [`gemm_rows`] for an A whose values are already bfloat16 (a softmax's output on the
/// device): rounding them again changes nothing, so the micro-kernel reads them in place
/// where it can, without a rounded, packed copy of A. The same bits.
pub fn gemm_rows_bf16(a: &[f32], rows: usize, b: &PackedB, bias: Option<&[f32]>, c: &mut [f32]) {
    let n = b.n;
    assert_operands(a, rows, b, bias, c);
    debug_assert!(
        a.iter()
            .all(|x| x.is_nan() || bf16::round(*x, Rounding::Truncate) == *x),
        "A holds bfloat16 values"
    );
    if rows == 0 || n == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the running CPU supports AVX-512F, checked just above.
        return unsafe { block_avx512::<false>(a, rows, b, bias, c) };
    }
    gemm_rows(Rounding::NearestEven, a, rows, b, bias, c)
}

/// [`gemm_f32`] on the calling thread only, for `rows` rows of A (`[rows, k]`): the work of
/// one task of a caller that spreads tasks itself.
pub fn gemm_f32_rows(
    a: &[f32],
    rows: usize,
    b: &PackedB,
    bias: Option<&[f32]>,
    gelu: bool,
    c: &mut [f32],
) {
    let (k, n) = (b.k, b.n);
    assert_operands(a, rows, b, bias, c);
    if rows == 0 || n == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the running CPU supports AVX-512F, checked just above.
        return unsafe { block_f32_avx512::<false>(a, rows, b, bias, gelu, c) };
    }
    A_BLOCK.with_borrow_mut(|a_block| {
        pack_a_plain(a, rows, k, micro_rows(), a_block);
        block_f32(a_block, rows, b, bias, gelu, c);
    });
}

/// `c = a @ b (+ bias)`, then GELU with `gelu`, for a few rows of A (fewer than the
/// micro-kernel's): a matrix-vector product bound by the reading of B, so the panels of B are
/// spread over rayon's pool and each is read once for up to four rows. The same sums as
/// [`gemm_f32`]: one float32 sum per output over the whole reduction.
pub fn gemv_f32(
    a: &[f32],
    rows: usize,
    b: &PackedB,
    bias: Option<&[f32]>,
    gelu: bool,
    c: &mut [f32],
) {
    let (k, n) = (b.k, b.n);
    assert_operands(a, rows, b, bias, c);
    // Four panels a step; about 128 KB of B a task.
    over_panel_tasks(k, n, 4, 32_768, c, |p0, p1, c| {
        gemv_panels(a, rows, b, bias, gelu, p0, p1, c)
    });
}

/// Spreads the panels of a `k`-deep matrix of `n` columns over rayon's current pool, `step`
/// panels at a time and about `floats` of its values a task, at least two tasks when there is
/// work: `f(p0, p1, c)` for each task's panels `p0 .. p1`, which writes only the columns of C
/// (`[rows, n]`) those panels give.
pub(crate) fn over_panel_tasks(
    k: usize,
    n: usize,
    step: usize,
    floats: usize,
    c: &mut [f32],
    f: impl Fn(usize, usize, &mut [f32]) + Sync,
) {
    let panels = n.div_ceil(NR);
    let per_task =
        ((floats / (k * NR).max(1)).max(1).div_ceil(step) * step).min(panels.div_ceil(2).max(step));
    let out = SharedOut::new(c);
    use rayon::prelude::*;
    (0..panels.div_ceil(per_task))
        .into_par_iter()
        .for_each(|t| {
            let (p0, p1) = (t * per_task, ((t + 1) * per_task).min(panels));
            // SAFETY: the tasks write disjoint column ranges (panels p0 .. p1) of C's rows.
            let c = unsafe { out.slice() };
            f(p0, p1, c);
        });
}

/// C shared by tasks that write disjoint columns of it.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32, usize);
// SAFETY: see `over_panel_tasks`: the tasks' writes are disjoint.
unsafe impl Send for SharedOut {}
// SAFETY: as above.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// C, to be written in disjoint parts by several tasks.
    fn new(c: &mut [f32]) -> SharedOut {
        SharedOut(c.as_mut_ptr(), c.len())
    }

    /// The whole of C.
    ///
    /// # Safety
    /// Callers write disjoint parts of it only.
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice(&self) -> &mut [f32] {
        // SAFETY: the pointer and length come from one live `&mut [f32]` (see
        // `over_panel_tasks`).
        unsafe { std::slice::from_raw_parts_mut(self.0, self.1) }
    }
}

/// Panels `p0 .. p1` of B against every row of A, into C's columns `p0 * NR ..`.
#[allow(clippy::too_many_arguments)]
fn gemv_panels(
    a: &[f32],
    rows: usize,
    b: &PackedB,
    bias: Option<&[f32]>,
    gelu: bool,
    p0: usize,
    p1: usize,
    c: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the running CPU supports AVX-512F, checked just above.
            return unsafe { gemv_panels_avx512(a, rows, b, bias, gelu, p0, p1, c) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the running CPU supports AVX2 and FMA, checked just above.
            return unsafe { gemv_panels_avx2(a, rows, b, bias, gelu, p0, p1, c) };
        }
    }
    gemv_panels_body::<1>(a, rows, b, bias, gelu, p0, p1, c)
}

/// The panels' products on AVX2 and FMA: two panels (32 columns, four vectors) against up to
/// three rows of A at a time, twelve sums in flight, so that several rows (a batch of
/// sequences) cost one reading of B and the fused multiply-adds run at the core's rate. Each
/// output is the same one fused sum over the reduction, in order, as elsewhere: the same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn gemv_panels_avx2(
    a: &[f32],
    rows: usize,
    b: &PackedB,
    bias: Option<&[f32]>,
    gelu: bool,
    p0: usize,
    p1: usize,
    c: &mut [f32],
) {
    let k = b.k;
    let whole = p0 + (p1 - p0) / 2 * 2;
    for p in (p0..whole).step_by(2) {
        let panels = &b.panels[p * k * NR..][..2 * k * NR];
        let mut r = 0;
        while r < rows {
            let tile = Tile {
                a,
                r0: r,
                panels,
                p,
                b,
                bias,
                gelu,
            };
            // SAFETY: AVX2 and FMA are enabled here; the rows and panels are inside `a` and
            // `b` (`r + R <= rows`, two panels from `p < whole`).
            r += unsafe {
                match rows - r {
                    1 => tile_avx2::<1>(&tile, c),
                    2 => tile_avx2::<2>(&tile, c),
                    _ => tile_avx2::<3>(&tile, c),
                }
            };
        }
    }
    gemv_panels_body::<1>(a, rows, b, bias, gelu, whole, p1, c);
}

/// Where a tile of [`gemv_panels_avx2`] reads and writes.
#[cfg(target_arch = "x86_64")]
struct Tile<'a> {
    a: &'a [f32],
    /// The tile's first row of A.
    r0: usize,
    /// Two panels of B, `[2, k, NR]`.
    panels: &'a [f32],
    /// The first panel's index.
    p: usize,
    b: &'a PackedB,
    bias: Option<&'a [f32]>,
    gelu: bool,
}

/// `R` rows of A (from `tile.r0`) against two panels: their 32 columns of C. Returns `R`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2<const R: usize>(tile: &Tile<'_>, c: &mut [f32]) -> usize {
    use std::arch::x86_64::*;
    let (k, n) = (tile.b.k, tile.b.n);
    assert!(tile.panels.len() >= 2 * k * NR && tile.a.len() >= (tile.r0 + R) * k);
    let mut acc = [[_mm256_setzero_ps(); 4]; R];
    let base = tile.panels.as_ptr();
    let rows = tile.a[tile.r0 * k..].as_ptr();
    for kk in 0..k {
        // SAFETY: `kk < k`, the two panels span `2 * k * NR` values and the rows `R * k`
        // (asserted above).
        unsafe {
            let b0 = _mm256_loadu_ps(base.add(kk * NR));
            let b1 = _mm256_loadu_ps(base.add(kk * NR + 8));
            let b2 = _mm256_loadu_ps(base.add((k + kk) * NR));
            let b3 = _mm256_loadu_ps(base.add((k + kk) * NR + 8));
            for (i, s) in acc.iter_mut().enumerate() {
                let av = _mm256_set1_ps(*rows.add(i * k + kk));
                s[0] = _mm256_fmadd_ps(av, b0, s[0]);
                s[1] = _mm256_fmadd_ps(av, b1, s[1]);
                s[2] = _mm256_fmadd_ps(av, b2, s[2]);
                s[3] = _mm256_fmadd_ps(av, b3, s[3]);
            }
        }
    }
    for (i, s) in acc.iter().enumerate() {
        let c_row = &mut c[(tile.r0 + i) * n..][..n];
        for q in 0..2 {
            let mut lanes = [0f32; NR];
            // SAFETY: `lanes` holds NR = 16 floats, two vectors of 8.
            unsafe {
                _mm256_storeu_ps(lanes.as_mut_ptr(), s[2 * q]);
                _mm256_storeu_ps(lanes.as_mut_ptr().add(8), s[2 * q + 1]);
            }
            store_panel(&mut lanes, tile.bias, tile.gelu, (tile.p + q) * NR, c_row);
        }
    }
    R
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn gemv_panels_avx512(
    a: &[f32],
    rows: usize,
    b: &PackedB,
    bias: Option<&[f32]>,
    gelu: bool,
    p0: usize,
    p1: usize,
    c: &mut [f32],
) {
    use std::arch::x86_64::*;
    const P: usize = 4;
    let (k, n) = (b.k, b.n);
    let whole = p0 + (p1 - p0) / P * P;
    for p in (p0..whole).step_by(P) {
        let panels = &b.panels[p * k * NR..][..P * k * NR];
        for r in 0..rows {
            let x = &a[r * k..][..k];
            // SAFETY: panel i of the four is `panels[i * k * NR..][..k * NR]` and `kk < k`,
            // so every load stays inside `panels`.
            let acc = unsafe {
                let mut acc = [_mm512_setzero_ps(); P];
                let base = panels.as_ptr();
                for (kk, &av) in x.iter().enumerate() {
                    let av = _mm512_set1_ps(av);
                    for (i, s) in acc.iter_mut().enumerate() {
                        let bv = _mm512_loadu_ps(base.add(i * k * NR + kk * NR));
                        *s = _mm512_fmadd_ps(av, bv, *s);
                    }
                }
                acc
            };
            for (i, v) in acc.iter().enumerate() {
                let mut lanes = [0f32; NR];
                // SAFETY: `lanes` holds NR = 16 floats.
                unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), *v) };
                store_panel(&mut lanes, bias, gelu, (p + i) * NR, &mut c[r * n..][..n]);
            }
        }
    }
    gemv_panels_body::<1>(a, rows, b, bias, gelu, whole, p1, c);
}

/// `P` panels at a time, one row of A at a time (`P` independent sums in flight).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn gemv_panels_body<const P: usize>(
    a: &[f32],
    rows: usize,
    b: &PackedB,
    bias: Option<&[f32]>,
    gelu: bool,
    p0: usize,
    p1: usize,
    c: &mut [f32],
) {
    let (k, n) = (b.k, b.n);
    for p in (p0..p1).step_by(P) {
        let panel: [&[f32]; P] = std::array::from_fn(|i| &b.panels[(p + i) * k * NR..][..k * NR]);
        for r in 0..rows {
            let x = &a[r * k..][..k];
            let mut acc = [[0f32; NR]; P];
            for (kk, &av) in x.iter().enumerate() {
                for i in 0..P {
                    let bv: &[f32; NR] = panel[i][kk * NR..(kk + 1) * NR].try_into().unwrap();
                    for j in 0..NR {
                        acc[i][j] = av.mul_add(bv[j], acc[i][j]);
                    }
                }
            }
            for (i, lanes) in acc.iter_mut().enumerate() {
                store_panel(lanes, bias, gelu, (p + i) * NR, &mut c[r * n..][..n]);
            }
        }
    }
}

/// The epilogue of one panel's sums for one row: the bias, GELU, then the columns from `col0`
/// that exist into `c_row`.
#[inline(always)]
fn store_panel(
    lanes: &mut [f32; NR],
    bias: Option<&[f32]>,
    gelu: bool,
    col0: usize,
    c_row: &mut [f32],
) {
    let cols = NR.min(c_row.len() - col0);
    if let Some(bias) = bias {
        for (l, b) in lanes.iter_mut().zip(&bias[col0..col0 + cols]) {
            *l += b;
        }
    }
    if gelu {
        for l in lanes.iter_mut() {
            *l = crate::cpu_math::gelu(*l);
        }
    }
    c_row[col0..col0 + cols].copy_from_slice(&lanes[..cols]);
}

/// [`pack_a`] without rounding, a group of rows at a time: `out[(g * k + kk) * group + r]`.
fn pack_a_plain(a: &[f32], rows: usize, k: usize, group: usize, out: &mut Vec<f32>) {
    out.clear();
    out.resize(rows.div_ceil(group) * group * k, 0.0);
    for (g, dst) in out.chunks_exact_mut(group * k).enumerate() {
        let r0 = g * group;
        let n_rows = group.min(rows - r0);
        let src = &a[r0 * k..(r0 + n_rows) * k];
        for (kk, step) in dst.chunks_exact_mut(group).enumerate() {
            for (r, v) in step[..n_rows].iter_mut().enumerate() {
                *v = src[r * k + kk];
            }
        }
    }
}

/// Rows of the micro-kernel [`block`] runs on this CPU, which [`pack_a`] groups A by.
pub(crate) fn micro_rows() -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return MR_AVX512;
        }
    }
    MR
}

/// `rows` rows of A (`[rows, k]`, row-major), rounded to bfloat16, into `out` in groups of
/// `group` rows, `k`-major within a group (`out[(g * k + kk) * group + r]`), the last group
/// padded with zero rows: the micro-kernel then reads each step's A values from one place.
fn pack_a(a: &[f32], rows: usize, k: usize, group: usize, rounding: Rounding, out: &mut Vec<f32>) {
    out.clear();
    out.resize(rows.div_ceil(group) * group * k, 0.0);
    for (i, row) in a.chunks_exact(k).take(rows).enumerate() {
        let (g, r) = (i / group, i % group);
        let base = g * k * group + r;
        for (kk, v) in row.iter().enumerate() {
            out[base + kk * group] = bf16::round(*v, rounding);
        }
    }
}

pub(crate) fn block(a: &[f32], rows: usize, b: &PackedB, bias: Option<&[f32]>, c: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the running CPU supports AVX-512F, checked just above.
            return unsafe { block_avx512::<true>(a, rows, b, bias, c) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the running CPU supports AVX2 and FMA, checked just above.
            return unsafe { block_avx2(a, rows, b, bias, c) };
        }
    }
    block_body::<false, MR>(a, rows, b, bias, c)
}

/// The operands of an AVX-512 micro-kernel fill their shapes: A in whole groups of
/// [`MR_AVX512`] rows (`GROUPED`) or row-major, C, the bias.
fn check_block<const GROUPED: bool>(
    a: &[f32],
    rows: usize,
    b: &PackedB,
    bias: Option<&[f32]>,
    c: &[f32],
) {
    let (k, n) = (b.k, b.n);
    if GROUPED {
        let groups = rows.div_ceil(MR_AVX512);
        assert!(
            a.len() >= groups * MR_AVX512 * k,
            "A packed in whole groups"
        );
    } else {
        assert!(a.len() >= rows * k, "A holds rows * k values");
    }
    assert!(c.len() >= rows * n, "C holds rows * n values");
    if let Some(bias) = bias {
        assert!(bias.len() >= n, "the bias holds n values");
    }
}

/// The epilogue of the AVX-512 micro-kernels for one row: the sums of `pair` panels from
/// panel `p`, plus the bias, GELU'd with `gelu`, into the columns of `c_row` that exist
/// (masked loads and stores past the last column).
///
/// # Safety
/// The CPU supports AVX-512F.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn store_pair(
    row: &[std::arch::x86_64::__m512; 2],
    pair: usize,
    p: usize,
    bias: Option<&[f32]>,
    gelu: bool,
    c_row: &mut [f32],
) {
    use std::arch::x86_64::*;
    let n = c_row.len();
    for (i, v) in row.iter().enumerate().take(pair) {
        let col0 = (p + i) * NR;
        let cols = NR.min(n - col0);
        let mask: __mmask16 = if cols == NR { !0 } else { (1 << cols) - 1 };
        // SAFETY: AVX-512F as the caller promises; the masked loads and stores touch columns
        // `col0 .. col0 + cols` only, which exist in `bias` (n values) and `c_row`.
        unsafe {
            let mut v = *v;
            if let Some(bias) = bias {
                v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, bias.as_ptr().add(col0)));
            }
            if gelu {
                v = crate::cpu_math::gelu_avx512(v);
            }
            _mm512_mask_storeu_ps(c_row.as_mut_ptr().add(col0), mask, v);
        }
    }
}

/// [`block_body`]'s sums with AVX-512, two panels at a time (12 rows x 32 columns, 24
/// accumulators for the k-tile in registers, the sums of the tiles before in a buffer each
/// group keeps), the reduction in passes of whole k-tiles of about [`KC`] steps so that the
/// panels' slices stay in L1 while every group of rows streams past them. Each output's sum is
/// the contract's: per k-tile from zero in order, the tiles added in order, then the bias.
///
/// With `GROUPED`, `a` is packed in groups of rows ([`pack_a`]); without, it is row-major
/// `[rows, k]`, already bfloat16 values, read in place (the last group's missing rows read
/// the last row again, their sums dropped).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn block_avx512<const GROUPED: bool>(
    a: &[f32],
    rows: usize,
    b: &PackedB,
    bias: Option<&[f32]>,
    c: &mut [f32],
) {
    use std::arch::x86_64::*;
    const ROWS: usize = MR_AVX512;
    let (k, n) = (b.k, b.n);
    let panels = n.div_ceil(NR);
    let groups = rows.div_ceil(ROWS);
    check_block::<GROUPED>(a, rows, b, bias, c);
    let tile = b.k_tile.max(1);
    let pass = tile * (KC / tile).max(1);
    let mut tiles_sum = vec![[_mm512_setzero_ps(); 2]; groups * ROWS];
    for p in (0..panels).step_by(2) {
        let pair = (panels - p).min(2);
        // With one panel left, its pair reads the same panel again and drops the result.
        let b0 = &b.panels[p * k * NR..][..k * NR];
        let b1 = &b.panels[(p + pair - 1) * k * NR..][..k * NR];
        tiles_sum.fill([_mm512_setzero_ps(); 2]);
        for p0 in (0..k).step_by(pass) {
            let p1 = (p0 + pass).min(k);
            for g in 0..groups {
                let sums = &mut tiles_sum[g * ROWS..][..ROWS];
                for k0 in (p0..p1).step_by(tile) {
                    let k1 = (k0 + tile).min(k);
                    // SAFETY: the loads stay inside `b0`, `b1` (k * NR values each, `kk < k`)
                    // and `a`: grouped, `(g * k + kk) * ROWS + r` with `kk < k`, `r < ROWS`;
                    // row-major, row `min(g * ROWS + r, rows - 1) < rows`, column `kk < k`.
                    unsafe {
                        let mut acc = [[_mm512_setzero_ps(); 2]; ROWS];
                        let rp: [*const f32; ROWS] = std::array::from_fn(|r| {
                            if GROUPED {
                                a.as_ptr().add(g * k * ROWS + r)
                            } else {
                                a.as_ptr().add((g * ROWS + r).min(rows - 1) * k)
                            }
                        });
                        let step = if GROUPED { ROWS } else { 1 };
                        for kk in k0..k1 {
                            let x0 = _mm512_loadu_ps(b0.as_ptr().add(kk * NR));
                            let x1 = _mm512_loadu_ps(b1.as_ptr().add(kk * NR));
                            for (r, row) in acc.iter_mut().enumerate() {
                                let av = _mm512_set1_ps(*rp[r].add(kk * step));
                                row[0] = _mm512_fmadd_ps(av, x0, row[0]);
                                row[1] = _mm512_fmadd_ps(av, x1, row[1]);
                            }
                        }
                        for (s, t) in sums.iter_mut().zip(&acc) {
                            s[0] = _mm512_add_ps(s[0], t[0]);
                            s[1] = _mm512_add_ps(s[1], t[1]);
                        }
                    }
                }
            }
        }
        for g in 0..groups {
            let r0 = g * ROWS;
            for (r, row) in tiles_sum[g * ROWS..][..ROWS]
                .iter()
                .enumerate()
                .take(ROWS.min(rows - r0))
            {
                // SAFETY: AVX-512F is enabled in this function.
                unsafe { store_pair(row, pair, p, bias, false, &mut c[(r0 + r) * n..][..n]) };
            }
        }
    }
}

/// [`block_body`] with fused multiply-adds in AVX2 registers: [`MR`] rows x 16 columns, twelve
/// vector sums, each output's sum in the same order as there (so the same bits), with the
/// broadcasts of A and the loads of B the compiler did not keep in registers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_avx2(a: &[f32], rows: usize, b: &PackedB, bias: Option<&[f32]>, c: &mut [f32]) {
    use std::arch::x86_64::*;
    let (k, n) = (b.k, b.n);
    if rows == 0 || n == 0 {
        return;
    }
    assert!(
        a.len() >= rows.div_ceil(MR) * MR * k,
        "A in whole groups of MR rows"
    );
    assert!(b.panels.len() >= n.div_ceil(NR) * k * NR);
    for p in 0..n.div_ceil(NR) {
        let panel = b.panels[p * k * NR..].as_ptr();
        let cols = NR.min(n - p * NR);
        for r0 in (0..rows).step_by(MR) {
            let tile = a[r0 * k..].as_ptr();
            let mut acc_c = [[_mm256_setzero_ps(); 2]; MR];
            for k0 in (0..k).step_by(b.k_tile) {
                let k1 = (k0 + b.k_tile).min(k);
                let mut acc = [[_mm256_setzero_ps(); 2]; MR];
                for kk in k0..k1 {
                    // SAFETY: `kk < k`: the panel's row `kk` and the group's step `kk` are
                    // inside B and A (asserted above).
                    unsafe {
                        let b0 = _mm256_loadu_ps(panel.add(kk * NR));
                        let b1 = _mm256_loadu_ps(panel.add(kk * NR + 8));
                        for (r, s) in acc.iter_mut().enumerate() {
                            let av = _mm256_broadcast_ss(&*tile.add(kk * MR + r));
                            s[0] = _mm256_fmadd_ps(av, b0, s[0]);
                            s[1] = _mm256_fmadd_ps(av, b1, s[1]);
                        }
                    }
                }
                for (sum, part) in acc_c.iter_mut().zip(&acc) {
                    sum[0] = _mm256_add_ps(sum[0], part[0]);
                    sum[1] = _mm256_add_ps(sum[1], part[1]);
                }
            }
            for (r, sum) in acc_c.iter().enumerate().take(MR.min(rows - r0)) {
                let mut lanes = [0f32; NR];
                // SAFETY: `lanes` holds 16 floats, two vectors of 8.
                unsafe {
                    _mm256_storeu_ps(lanes.as_mut_ptr(), sum[0]);
                    _mm256_storeu_ps(lanes.as_mut_ptr().add(8), sum[1]);
                }
                let out = &mut c[(r0 + r) * n + p * NR..][..cols];
                for (j, o) in out.iter_mut().enumerate() {
                    *o = match bias {
                        Some(bias) => lanes[j] + bias[p * NR + j],
                        None => lanes[j],
                    };
                }
            }
        }
    }
}

/// All panels of B against `rows` rows of A (padded to whole micro-tiles). `FMA` selects
/// fused multiply-adds where the CPU has them; for bfloat16 factors the product is exact and
/// the fused and unfused forms give the same sums.
#[inline(always)]
fn block_body<const FMA: bool, const ROWS: usize>(
    a: &[f32],
    rows: usize,
    b: &PackedB,
    bias: Option<&[f32]>,
    c: &mut [f32],
) {
    let (k, n) = (b.k, b.n);
    let mut acc_c = [[0.0f32; NR]; ROWS];
    for p in 0..n.div_ceil(NR) {
        let panel = &b.panels[p * k * NR..(p + 1) * k * NR];
        let cols = NR.min(n - p * NR);
        for r0 in (0..rows).step_by(ROWS) {
            let a_tile = &a[r0 * k..(r0 + ROWS) * k];
            for row in acc_c.iter_mut() {
                *row = [0.0; NR];
            }
            for k0 in (0..k).step_by(b.k_tile) {
                let k1 = (k0 + b.k_tile).min(k);
                let mut acc = [[0.0f32; NR]; ROWS];
                for kk in k0..k1 {
                    let bv: &[f32; NR] = panel[kk * NR..(kk + 1) * NR].try_into().unwrap();
                    let a_step: &[f32; ROWS] =
                        a_tile[kk * ROWS..(kk + 1) * ROWS].try_into().unwrap();
                    for r in 0..ROWS {
                        let av = a_step[r];
                        for j in 0..NR {
                            acc[r][j] = if FMA {
                                av.mul_add(bv[j], acc[r][j])
                            } else {
                                av * bv[j] + acc[r][j]
                            };
                        }
                    }
                }
                for r in 0..ROWS {
                    for j in 0..NR {
                        acc_c[r][j] += acc[r][j];
                    }
                }
            }
            for r in 0..ROWS.min(rows - r0) {
                let out = &mut c[(r0 + r) * n + p * NR..(r0 + r) * n + p * NR + cols];
                for (j, o) in out.iter_mut().enumerate() {
                    *o = match bias {
                        Some(bias) => acc_c[r][j] + bias[p * NR + j],
                        None => acc_c[r][j],
                    };
                }
            }
        }
    }
}

/// [`block`] for B packed by [`PackedB::plain`] (one k-tile), then GELU with `gelu`: the
/// AVX-512 micro-kernel takes two panels at once (12 rows x 32 columns, 24 accumulators),
/// which halves the broadcasts of A per multiply-add, and applies the GELU to each tile as it
/// stores it.
pub(crate) fn block_f32(
    a: &[f32],
    rows: usize,
    b: &PackedB,
    bias: Option<&[f32]>,
    gelu: bool,
    c: &mut [f32],
) {
    debug_assert!(b.k_tile >= b.k, "one k-tile");
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the running CPU supports AVX-512F, checked just above.
            return unsafe { block_f32_avx512::<true>(a, rows, b, bias, gelu, c) };
        }
    }
    block(a, rows, b, bias, c);
    if gelu {
        crate::cpu_math::gelu_slice(&mut c[..rows * b.n]);
    }
}

/// Reduction steps of one pass of the AVX-512 micro-kernel over a pair of panels of B: those
/// `KC x 32` float32 values (32 KiB) stay in the core's L1 data cache (48 KiB on current x86
/// cores) while every group of rows of A streams past them. Longer reductions take several
/// passes, each output's sum carried from one pass to the next in order, so the passes change
/// where the sums wait, never their value.
const KC: usize = 256;

/// With `GROUPED`, `a` is packed in groups of rows ([`pack_a_plain`]); without, it is
/// row-major `[rows, k]` and the micro-kernel reads each of its rows in place (the last
/// group's missing rows read the last row again, their sums dropped), which saves a copy of A
/// for every product.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn block_f32_avx512<const GROUPED: bool>(
    a: &[f32],
    rows: usize,
    b: &PackedB,
    bias: Option<&[f32]>,
    gelu: bool,
    c: &mut [f32],
) {
    use std::arch::x86_64::*;
    const ROWS: usize = MR_AVX512;
    let (k, n) = (b.k, b.n);
    let panels = n.div_ceil(NR);
    let groups = rows.div_ceil(ROWS);
    check_block::<GROUPED>(a, rows, b, bias, c);
    let passes = k.div_ceil(KC).max(1);
    // Each group's sums between passes (12 rows x 32 columns).
    let mut partial = vec![[_mm512_setzero_ps(); 2]; if passes > 1 { groups * ROWS } else { 0 }];
    for p in (0..panels).step_by(2) {
        let pair = (panels - p).min(2);
        // With one panel left, its pair reads the same panel again and drops the result.
        let b0 = &b.panels[p * k * NR..][..k * NR];
        let b1 = &b.panels[(p + pair - 1) * k * NR..][..k * NR];
        for pass in 0..passes {
            let k0 = pass * KC;
            let kc = KC.min(k - k0);
            for g in 0..groups {
                let r0 = g * ROWS;
                let mut acc = [[_mm512_setzero_ps(); 2]; ROWS];
                if pass > 0 {
                    acc.copy_from_slice(&partial[g * ROWS..][..ROWS]);
                }
                if pass + 1 == passes {
                    // The tile's rows of C, asked for now: their lines arrive while the tile
                    // is computed rather than stalling its stores (C is written once, in
                    // memory no cache holds yet when it is large).
                    for r in r0..rows.min(r0 + ROWS) {
                        let row = c.as_ptr().wrapping_add(r * n + p * NR);
                        _mm_prefetch::<_MM_HINT_T0>(row.cast());
                        _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(NR * (pair - 1)).cast());
                    }
                }
                // SAFETY: the loads stay inside `b0`, `b1` (k * NR values each, `k0 + kk < k`)
                // and `a`: grouped, `(g * k + k0 + kk) * ROWS + r` with `kk < kc`, `r < ROWS`;
                // row-major, row `min(r0 + r, rows - 1) < rows`, column `k0 + kk < k`.
                unsafe {
                    let (b0, b1) = (b0.as_ptr().add(k0 * NR), b1.as_ptr().add(k0 * NR));
                    if GROUPED {
                        let a_tile = a.as_ptr().add((g * k + k0) * ROWS);
                        for kk in 0..kc {
                            let x0 = _mm512_loadu_ps(b0.add(kk * NR));
                            let x1 = _mm512_loadu_ps(b1.add(kk * NR));
                            let ap = a_tile.add(kk * ROWS);
                            for (r, row) in acc.iter_mut().enumerate() {
                                let av = _mm512_set1_ps(*ap.add(r));
                                row[0] = _mm512_fmadd_ps(av, x0, row[0]);
                                row[1] = _mm512_fmadd_ps(av, x1, row[1]);
                            }
                        }
                    } else {
                        let rp: [*const f32; ROWS] = std::array::from_fn(|r| {
                            a.as_ptr().add((r0 + r).min(rows - 1) * k + k0)
                        });
                        for kk in 0..kc {
                            let x0 = _mm512_loadu_ps(b0.add(kk * NR));
                            let x1 = _mm512_loadu_ps(b1.add(kk * NR));
                            for (r, row) in acc.iter_mut().enumerate() {
                                let av = _mm512_set1_ps(*rp[r].add(kk));
                                row[0] = _mm512_fmadd_ps(av, x0, row[0]);
                                row[1] = _mm512_fmadd_ps(av, x1, row[1]);
                            }
                        }
                    }
                }
                if pass + 1 < passes {
                    partial[g * ROWS..][..ROWS].copy_from_slice(&acc);
                    continue;
                }
                for (r, row) in acc.iter().enumerate().take(ROWS.min(rows - r0)) {
                    // SAFETY: AVX-512F is enabled in this function.
                    unsafe { store_pair(row, pair, p, bias, gelu, &mut c[(r0 + r) * n..][..n]) };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::Tile;
    use proptest::prelude::*;

    /// The contract written as plainly as possible: per output, per k-tile, sequential float32
    /// sums of exact products, tiles added in order.
    fn reference(
        c: &GemmContract,
        a: &[f32],
        b: &[f32],
        bias: Option<&[f32]>,
        m: usize,
        k: usize,
        n: usize,
    ) -> Vec<f32> {
        let r = |x: f32| bf16::round(x, c.rounding);
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut total = 0.0f32;
                for k0 in (0..k).step_by(c.tile.k) {
                    let mut partial = 0.0f32;
                    for kk in k0..(k0 + c.tile.k).min(k) {
                        let product = r(a[i * k + kk]) as f64 * r(b[kk * n + j]) as f64;
                        assert_eq!(
                            product as f32 as f64, product,
                            "bf16 products are exact in f32"
                        );
                        partial += product as f32;
                    }
                    total += partial;
                }
                out[i * n + j] = total + bias.map_or(0.0, |b| b[j]);
            }
        }
        out
    }

    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 4.0
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Bit-exact against the plain reference, for shapes that are not multiples of any
        /// tile or micro-tile, with either rounding and with or without a bias.
        #[test]
        fn gemm_is_the_contract_to_the_bit(
            m in 1usize..40, k in 1usize..200, n in 1usize..50, seed in any::<u64>(),
            truncate in any::<bool>(), with_bias in any::<bool>(), k_tile in prop::sample::select(vec![8usize, 64]),
        ) {
            let rounding = if truncate { Rounding::Truncate } else { Rounding::NearestEven };
            let contract = GemmContract { tile: Tile { m: 64, k: k_tile, n: 32 }, ..GemmContract::XDNA1 }
                .with_rounding(rounding);
            let a = values(m * k, seed);
            let b = values(k * n, seed.wrapping_add(1));
            let bias = values(n, seed.wrapping_add(2));
            let bias = with_bias.then_some(bias.as_slice());
            let packed = PackedB::new(&contract, &b, k, n);
            let mut c = vec![f32::NAN; m * n];
            gemm(rounding, &a, m, &packed, bias, &mut c);
            let expected = reference(&contract, &a, &b, bias, m, k, n);
            for (i, (x, y)) in c.iter().zip(&expected).enumerate() {
                prop_assert_eq!(x.to_bits(), y.to_bits(), "element {} of [{}x{}]", i, m, n);
            }
        }
    }

    type Block = fn(&[f32], usize, &PackedB, Option<&[f32]>, &mut [f32]);

    /// Every micro-kernel this CPU can run (the portable one always), each on one task's rows:
    /// all must give the contract's bits, whichever `gemm` picks at run time.
    #[test]
    fn every_micro_kernel_is_the_contract_to_the_bit() {
        let mut kernels: Vec<(&str, usize, Block)> =
            vec![("portable", MR, block_body::<false, MR>)];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                // SAFETY: called only on a CPU with AVX2 and FMA (checked here).
                kernels.push(("avx2", MR, |a, r, b, bias, c| unsafe {
                    block_avx2(a, r, b, bias, c)
                }));
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: called only on a CPU with AVX-512F (checked here).
                kernels.push(("avx512", MR_AVX512, |a, r, b, bias, c| unsafe {
                    block_avx512::<true>(a, r, b, bias, c)
                }));
            }
        }
        for (m, k, n) in [(1, 1, 1), (13, 70, 17), (24, 129, 48), (7, 300, 33)] {
            let contract = GemmContract::XDNA1;
            let (a, b, bias) = (values(m * k, 11), values(k * n, 12), values(n, 13));
            let packed = PackedB::new(&contract, &b, k, n);
            let expected = reference(&contract, &a, &b, Some(&bias), m, k, n);
            for (name, rows, kernel) in &kernels {
                let mut a_block = Vec::new();
                pack_a(&a, m, k, *rows, contract.rounding, &mut a_block);
                let mut c = vec![f32::NAN; m * n];
                kernel(&a_block, m, &packed, Some(&bias), &mut c);
                let same = c
                    .iter()
                    .zip(&expected)
                    .all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(
                    same,
                    "{name} micro-kernel differs from the contract on [{m}x{k}]x[{k}x{n}]"
                );
            }
        }
        eprintln!(
            "micro-kernels checked: {:?}",
            kernels.iter().map(|k| k.0).collect::<Vec<_>>()
        );
    }

    /// The float32 GEMM against float64 sums: within `k` float32 roundings of the sum of
    /// absolute products (each of the `k` additions rounds once).
    #[test]
    fn plain_gemm_is_a_float32_product() {
        for (m, k, n) in [(1, 1, 1), (13, 70, 17), (100, 384, 50), (7, 1536, 33)] {
            let (a, b, bias) = (values(m * k, 21), values(k * n, 22), values(n, 23));
            let packed = PackedB::plain(&b, k, n);
            let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
            assert_eq!(PackedB::plain_transposed(&bt, k, n).panels, packed.panels);
            let mut c = vec![f32::NAN; m * n];
            gemm_f32(&a, m, &packed, Some(&bias), false, &mut c);
            // The GELU epilogue is the GELU of those very values.
            let mut with_gelu = vec![f32::NAN; m * n];
            gemm_f32(&a, m, &packed, Some(&bias), true, &mut with_gelu);
            let mut then_gelu = c.clone();
            crate::cpu_math::gelu_slice(&mut then_gelu);
            assert!(
                with_gelu
                    .iter()
                    .zip(&then_gelu)
                    .all(|(x, y)| x.to_bits() == y.to_bits()),
                "GELU epilogue of [{m}x{k}]x[{k}x{n}]"
            );
            for i in 0..m {
                for j in 0..n {
                    let exact: f64 = bias[j] as f64
                        + (0..k)
                            .map(|kk| a[i * k + kk] as f64 * b[kk * n + j] as f64)
                            .sum::<f64>();
                    let bound: f64 = (0..k)
                        .map(|kk| (a[i * k + kk] as f64 * b[kk * n + j] as f64).abs())
                        .sum::<f64>()
                        + bias[j].abs() as f64;
                    let tolerance = bound * (k + 1) as f64 * 2f64.powi(-24);
                    assert!(
                        (c[i * n + j] as f64 - exact).abs() <= tolerance,
                        "({i}, {j}) of [{m}x{k}]x[{k}x{n}]"
                    );
                }
            }
        }
    }

    /// An A of bfloat16 values read in place gives the bits of the rounded, packed A.
    #[test]
    fn bfloat16_rows_read_in_place_give_the_gemms_bits() {
        for (m, k, n) in [(1, 1, 1), (13, 70, 17), (25, 300, 33), (96, 1500, 64)] {
            for rounding in [Rounding::NearestEven, Rounding::Truncate] {
                let contract = GemmContract::XDNA1.with_rounding(rounding);
                let a: Vec<f32> = values(m * k, 31)
                    .iter()
                    .map(|x| bf16::round(*x, rounding))
                    .collect();
                let (b, bias) = (values(k * n, 32), values(n, 33));
                let packed = PackedB::new(&contract, &b, k, n);
                let mut expected = vec![f32::NAN; m * n];
                gemm_rows(rounding, &a, m, &packed, Some(&bias), &mut expected);
                let mut got = vec![f32::NAN; m * n];
                gemm_rows_bf16(&a, m, &packed, Some(&bias), &mut got);
                assert!(
                    got.iter()
                        .zip(&expected)
                        .all(|(x, y)| x.to_bits() == y.to_bits()),
                    "[{m}x{k}]x[{k}x{n}] {rounding:?}"
                );
            }
        }
    }

    /// The product of a few rows reads B panel by panel and gives the bits of the GEMM.
    #[test]
    fn few_rows_give_the_gemms_bits() {
        for (rows, k, n) in [
            (1, 384, 51_865),
            (3, 64, 40),
            (5, 1536, 384),
            (8, 384, 1536),
            (7, 65, 100),
            (1, 1, 1),
        ] {
            let (a, b, bias) = (values(rows * k, 31), values(k * n, 32), values(n, 33));
            let packed = PackedB::plain(&b, k, n);
            for gelu in [false, true] {
                let (mut x, mut y) = (vec![f32::NAN; rows * n], vec![f32::NAN; rows * n]);
                gemv_f32(&a, rows, &packed, Some(&bias), gelu, &mut x);
                gemm_f32(&a, rows, &packed, Some(&bias), gelu, &mut y);
                assert!(
                    x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits()),
                    "[{rows}x{k}]x[{k}x{n}], gelu {gelu}"
                );
            }
        }
    }

    /// Against float64 products of the unrounded operands, the error is what bfloat16
    /// operands allow: each operand's relative error is at most 2^-8 (nearest) or 2^-7
    /// (truncation), so each product's at most about 2^-7 / 2^-6, bounded by the sum of
    /// absolute products.
    #[test]
    fn error_against_float64_is_bounded_by_bf16() {
        let (m, k, n) = (33, 300, 45);
        let a = values(m * k, 3);
        let b = values(k * n, 4);
        for (rounding, rel) in [
            (Rounding::NearestEven, 2f64.powi(-7)),
            (Rounding::Truncate, 2f64.powi(-6)),
        ] {
            let contract = GemmContract::XDNA1.with_rounding(rounding);
            let mut c = vec![0.0; m * n];
            gemm(
                rounding,
                &a,
                m,
                &PackedB::new(&contract, &b, k, n),
                None,
                &mut c,
            );
            for i in 0..m {
                for j in 0..n {
                    let exact: f64 = (0..k)
                        .map(|kk| a[i * k + kk] as f64 * b[kk * n + j] as f64)
                        .sum();
                    let bound: f64 = (0..k)
                        .map(|kk| (a[i * k + kk] as f64 * b[kk * n + j] as f64).abs())
                        .sum();
                    // Operand rounding, plus float32 accumulation (k * 2^-24 relative).
                    let tolerance = bound * (rel * 1.01 + k as f64 * 2f64.powi(-24));
                    assert!(
                        (c[i * n + j] as f64 - exact).abs() <= tolerance,
                        "({i}, {j})"
                    );
                }
            }
        }
    }
}
