//! The device interface in plain float32 on the CPU: the `cpu` backend's matrix products
//! (the emulator's packed micro-kernels without the rounding to bfloat16), attention,
//! softmax and GELU. Ops that run here count as CPU ops in placement reports.

use std::cell::RefCell;
use std::sync::Arc;

use rayon::prelude::*;

use crate::attention::for_each_query_block;
use crate::cpu_math;
use crate::device::{
    AttentionDims, Counters, Device, DeviceError, Epilogue, Heads, HeadsMut, Weights, checks,
};
use crate::gemm::GemmContract;
use crate::packed_gemm::{PackedB, gemm_f32, gemm_f32_rows};

/// Queries of attention computed together (eight groups of the AVX-512 micro-kernel's 12
/// rows): their scores against 1500 keys, turned into exponentials in place (96 x 1500
/// float32 values, 576 KB), stay in the core's L2 cache between the two products.
const QUERY_BLOCK: usize = 96;

/// Weights as the CPU keeps them: B packed for the micro-kernel, and the bias.
#[derive(Debug)]
struct CpuWeights {
    packed: PackedB,
    bias: Option<Vec<f32>>,
}

/// Plain float32 on the CPU (`--backend cpu`): every product one float32 sum per output
/// (fused multiply-adds), GELU exact (`erf`, [`cpu_math::gelu`]), softmax and attention in
/// float32 ([`cpu_math::softmax_rows`]). Work is spread over rayon's current pool. It moves no
/// bytes anywhere: its counters stay at zero.
#[derive(Debug)]
pub struct CpuDevice {
    contract: GemmContract,
    counters: Counters,
}

impl Default for CpuDevice {
    fn default() -> Self {
        CpuDevice {
            contract: GemmContract::XDNA1,
            counters: Counters::default(),
        }
    }
}

impl CpuDevice {
    /// The CPU as a device.
    pub fn new() -> CpuDevice {
        CpuDevice::default()
    }
}

impl Device for CpuDevice {
    fn prefix(&self) -> &'static str {
        "Cpu"
    }

    fn is_cpu(&self) -> bool {
        true
    }

    fn contract(&self) -> &GemmContract {
        &self.contract
    }

    fn prepare_weights(
        &self,
        b: &[f32],
        k: usize,
        n: usize,
        bias: Option<&[f32]>,
    ) -> Result<Arc<Weights>, DeviceError> {
        checks::weights(b, k, n, bias)?;
        Ok(Arc::new(Weights::new(
            k,
            n,
            bias.is_some(),
            Box::new(CpuWeights {
                packed: PackedB::plain(b, k, n),
                bias: bias.map(<[f32]>::to_vec),
            }),
        )))
    }

    fn matmul(
        &self,
        a: &[f32],
        m: usize,
        w: &Weights,
        epilogue: Epilogue,
        c: &mut [f32],
    ) -> Result<(), DeviceError> {
        let cw = checks::own::<CpuWeights>(w)?;
        checks::matmul(a, m, w, c)?;
        let gelu = epilogue == Epilogue::Gelu;
        gemm_f32(a, m, &cw.packed, cw.bias.as_deref(), gelu, c);
        Ok(())
    }

    fn matmul_act(
        &self,
        a: &[f32],
        b: &[f32],
        (m, k, n): (usize, usize, usize),
        c: &mut [f32],
    ) -> Result<(), DeviceError> {
        checks::matmul_act(a, b, (m, k, n), c)?;
        gemm_f32(a, m, &PackedB::plain(b, k, n), None, false, c);
        Ok(())
    }

    fn attention(
        &self,
        q: &[f32],
        kt: &[f32],
        v: &[f32],
        dims: AttentionDims,
        out: &mut [f32],
    ) -> Result<(), DeviceError> {
        // One head is a layer of one: the same checks, the same work.
        self.attention_heads(q, kt, v, dims, 1, out)
    }

    fn attention_heads(
        &self,
        q: &[f32],
        kt: &[f32],
        v: &[f32],
        dims: AttentionDims,
        heads: usize,
        out: &mut [f32],
    ) -> Result<(), DeviceError> {
        checks::attention_heads(q, kt, v, dims, heads, out)?;
        crate::strided::heads_as_strided(self, q, kt, v, dims, heads, out)
    }

    /// Every head in blocks of `QUERY_BLOCK` queries, all spread over the pool at once (the
    /// pool waits once for the whole layer, not once a head): per block, the scores `S = Q
    /// K^T` (the block's queries read in place as the micro-kernel's rows, K^T packed once a
    /// head as its panels), the softmax's exponentials of each row of S in place with the
    /// row's sum, `O = P V` (P read in place, V packed once a head as the panels), each row of
    /// O divided by its sum as it is written out. The block's scores stay in the core's L2
    /// cache; no `[m, n]` matrix is ever written out, and no operand is copied whole.
    fn attention_strided(
        &self,
        q: Heads<'_>,
        kt: Heads<'_>,
        v: Heads<'_>,
        out: &mut HeadsMut<'_>,
    ) -> Result<(), DeviceError> {
        let (heads, dims) = checks::attention_strided(&q, &kt, &v, out)?;
        let AttentionDims { m, n, dv, .. } = dims;
        if dv == 0 || m == 0 || heads == 0 {
            return Ok(());
        }
        // Per head: K^T and V as the panels of the two products.
        let packed: Vec<(PackedB, PackedB)> = (0..heads)
            .into_par_iter()
            .map(|h| {
                (
                    pack_keys(&kt, h),
                    PackedB::plain_with(n, dv, |kk, row| v.read_row(h, kk, row)),
                )
            })
            .collect();
        thread_local! {
            static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
        }
        for_each_query_block(&q, out, &packed, QUERY_BLOCK, |(keys, values), q, o| {
            let rows = o.len() / dv;
            SCORES.with_borrow_mut(|scores| {
                scores.resize(rows * n, 0.0);
                let scores = &mut scores[..rows * n];
                gemm_f32_rows(q, rows, keys, None, false, scores);
                let mut sums = [0f32; QUERY_BLOCK];
                cpu_math::exp_rows(scores, n, &mut sums);
                gemm_f32_rows(scores, rows, values, None, false, o);
                for (o_row, sum) in o.chunks_exact_mut(dv).zip(sums) {
                    let inv = 1.0 / sum;
                    o_row.iter_mut().for_each(|x| *x *= inv);
                }
            });
        });
        Ok(())
    }

    fn softmax(&self, x: &mut [f32], cols: usize) -> Result<(), DeviceError> {
        checks::softmax(x, cols)?;
        x.par_chunks_mut(cols * 16.max(4096 / cols.max(1)))
            .for_each(|rows| cpu_math::softmax_rows(rows, cols));
        Ok(())
    }

    fn gelu(&self, x: &mut [f32]) -> Result<(), DeviceError> {
        x.par_chunks_mut(1 << 14).for_each(cpu_math::gelu_slice);
        Ok(())
    }

    fn counters(&self) -> &Counters {
        &self.counters
    }
}

/// Head `h` of `kt` (`[heads, d, n]`) as the panels of a product's right operand: run by run
/// when keys are adjacent, else key by key (a key's `d` values adjacent, as projections write
/// them).
fn pack_keys(kt: &Heads<'_>, h: usize) -> PackedB {
    let [_, d, n] = kt.shape();
    if kt.strides()[2] == 1 || n <= 1 {
        return PackedB::plain_with(d, n, |kk, row| kt.read_row(h, kk, row));
    }
    let panel = PackedB::PANEL;
    let mut panels = vec![0f32; n.div_ceil(panel) * d * panel];
    for j in 0..n {
        let (p, c) = (j / panel, j % panel);
        for kk in 0..d {
            panels[(p * d + kk) * panel + c] = kt.get(h, kk, j);
        }
    }
    PackedB::from_panels(d, n, panels)
}

/// This machine's float32 multiply-add throughput, measured: every thread of rayon's current
/// pool runs independent chains of fused multiply-adds on the widest vectors the CPU has
/// (AVX-512, else AVX2 + FMA, else scalar) for about `seconds`, with enough chains to hide the
/// latency of each; returns the sum over threads, in FLOP/s (a multiply-add is two). This is
/// the ceiling a float32 matrix product can approach on this machine at this thread count, at
/// the clock the CPU holds under such load: benchmarks state their share of it.
pub fn measure_fma_peak(seconds: f64) -> f64 {
    let threads = rayon::current_num_threads();
    let start = std::time::Instant::now();
    let flops: u64 = (0..threads)
        .into_par_iter()
        .map(|_| {
            let mut total = 0;
            let t = std::time::Instant::now();
            while t.elapsed().as_secs_f64() < seconds {
                total += fma_chains(1 << 16);
            }
            total
        })
        .sum();
    flops as f64 / start.elapsed().as_secs_f64()
}

/// Runs `steps` steps of independent multiply-add chains; returns the FLOPs done.
fn fma_chains(steps: usize) -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F, checked just above.
            return unsafe { fma_chains_avx512(steps) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports AVX2 and FMA, checked just above.
            return unsafe { fma_chains_avx2(steps) };
        }
    }
    let mut acc = [1.0f32; 16];
    for _ in 0..steps {
        for a in acc.iter_mut() {
            *a = a.mul_add(0.999_999, 1e-7);
        }
    }
    std::hint::black_box(acc);
    (steps * 16 * 2) as u64
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma_chains_avx512(steps: usize) -> u64 {
    use std::arch::x86_64::*;
    // 16 chains: four cycles of latency times two multiply-add units, twice over.
    let mut acc = [_mm512_set1_ps(1.0); 16];
    let (a, b) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
    for _ in 0..steps {
        for v in acc.iter_mut() {
            *v = _mm512_fmadd_ps(*v, a, b);
        }
    }
    std::hint::black_box(acc);
    (steps * 16 * 16 * 2) as u64
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_chains_avx2(steps: usize) -> u64 {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_set1_ps(1.0); 12];
    let (a, b) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
    for _ in 0..steps {
        for v in acc.iter_mut() {
            *v = _mm256_fmadd_ps(*v, a, b);
        }
    }
    std::hint::black_box(acc);
    (steps * 12 * 8 * 2) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0
            })
            .collect()
    }

    /// Several heads in one call give each head's own call, to the bit.
    #[test]
    fn heads_together_are_heads_one_by_one() {
        let cpu = CpuDevice::new();
        let (heads, m, d, n, dv) = (3, 100, 24, 70, 20);
        let dims = AttentionDims { m, d, n, dv };
        let (q, kt, v) = (
            values(heads * m * d, 4),
            values(heads * d * n, 5),
            values(heads * n * dv, 6),
        );
        let mut together = vec![f32::NAN; heads * m * dv];
        cpu.attention_heads(&q, &kt, &v, dims, heads, &mut together)
            .unwrap();
        for h in 0..heads {
            let mut one = vec![f32::NAN; m * dv];
            cpu.attention(
                &q[h * m * d..][..m * d],
                &kt[h * d * n..][..d * n],
                &v[h * n * dv..][..n * dv],
                dims,
                &mut one,
            )
            .unwrap();
            assert!(
                one.iter()
                    .zip(&together[h * m * dv..][..m * dv])
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "head {h}"
            );
        }
        assert!(
            cpu.attention_heads(&q, &kt, &v, dims, heads + 1, &mut together)
                .is_err(),
            "operands one head short are refused"
        );
    }

    /// Blocked attention against a float64 reference, on shapes that are not multiples of the
    /// query block or the micro-tiles.
    #[test]
    fn attention_is_softmax_of_scores_times_v() {
        let cpu = CpuDevice::new();
        for (m, d, n, dv) in [(1, 64, 1500, 64), (97, 64, 130, 40), (50, 17, 9, 3)] {
            let (q, kt, v) = (values(m * d, 1), values(d * n, 2), values(n * dv, 3));
            let mut out = vec![f32::NAN; m * dv];
            cpu.attention(&q, &kt, &v, AttentionDims { m, d, n, dv }, &mut out)
                .unwrap();
            for i in 0..m {
                let s: Vec<f64> = (0..n)
                    .map(|j| {
                        (0..d)
                            .map(|c| q[i * d + c] as f64 * kt[c * n + j] as f64)
                            .sum()
                    })
                    .collect();
                let max = s.iter().copied().fold(f64::MIN, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
                let sum: f64 = e.iter().sum();
                for c in 0..dv {
                    let want: f64 = (0..n).map(|j| e[j] / sum * v[j * dv + c] as f64).sum();
                    let got = out[i * dv + c] as f64;
                    // Float32 sums of d products and n terms, and exp within 2 ulp.
                    assert!(
                        (got - want).abs() <= 2e-5,
                        "({i}, {c}) of {m}x{d}x{n}x{dv}: {got} vs {want}"
                    );
                }
            }
        }
    }
}
