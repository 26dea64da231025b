//! The device interface in plain float32 on the CPU: the `cpu` backend's matrix products
//! (the emulator's packed micro-kernels without the rounding to bfloat16), attention,
//! softmax and GELU. Ops that run here count as CPU ops in placement reports.

use std::cell::RefCell;
use std::sync::Arc;

use rayon::prelude::*;

use crate::device::{AttentionDims, Counters, Device, DeviceError, Epilogue, Weights, checks};
use crate::emu::{PackedB, gemm_f32, gemm_f32_rows};
use crate::fmath;
use crate::gemm::GemmContract;

/// Query rows of attention computed together: their scores against every key (48 x 1500
/// float32 values, 288 KB) stay in the core's L2 cache between the two products.
const QUERY_BLOCK: usize = 48;

/// Weights as the CPU keeps them: B packed for the micro-kernel, and the bias.
#[derive(Debug)]
struct CpuWeights {
    packed: PackedB,
    bias: Option<Vec<f32>>,
}

/// Plain float32 on the CPU (`--backend cpu`): every product one float32 sum per output
/// (fused multiply-adds), GELU exact (`erf`, [`fmath::gelu`]), softmax and attention in
/// float32 ([`fmath::softmax_rows`]). Work is spread over rayon's current pool. It moves no
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
        gemm_f32(a, m, &cw.packed, cw.bias.as_deref(), c);
        if epilogue == Epilogue::Gelu {
            let n = w.n();
            c.par_chunks_mut(n * 64).for_each(fmath::gelu_slice);
        }
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
        gemm_f32(a, m, &PackedB::plain(b, k, n), None, c);
        Ok(())
    }

    /// One head, in blocks of [`QUERY_BLOCK`] queries spread over the pool: a block's scores
    /// against every key, their softmax, then their product with V, so that no `[m, n]`
    /// matrix is ever written out.
    fn attention(
        &self,
        q: &[f32],
        kt: &[f32],
        v: &[f32],
        dims: AttentionDims,
        out: &mut [f32],
    ) -> Result<(), DeviceError> {
        checks::attention(q, kt, v, dims, out)?;
        let AttentionDims { d, n, dv, .. } = dims;
        if dv == 0 || dims.m == 0 {
            return Ok(());
        }
        let kt = PackedB::plain(kt, d, n);
        let v = PackedB::plain(v, n, dv);
        thread_local! {
            static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
        }
        out.par_chunks_mut(QUERY_BLOCK * dv)
            .enumerate()
            .for_each(|(block, o)| {
                let rows = o.len() / dv;
                let q = &q[block * QUERY_BLOCK * d..][..rows * d];
                SCORES.with_borrow_mut(|scores| {
                    scores.resize(rows * n, 0.0);
                    gemm_f32_rows(q, rows, &kt, None, scores);
                    fmath::softmax_rows(scores, n);
                    gemm_f32_rows(scores, rows, &v, None, o);
                });
            });
        Ok(())
    }

    fn softmax(&self, x: &mut [f32], cols: usize) -> Result<(), DeviceError> {
        checks::softmax(x, cols)?;
        x.par_chunks_mut(cols * 16.max(4096 / cols.max(1)))
            .for_each(|rows| fmath::softmax_rows(rows, cols));
        Ok(())
    }

    fn gelu(&self, x: &mut [f32]) -> Result<(), DeviceError> {
        x.par_chunks_mut(1 << 14).for_each(fmath::gelu_slice);
        Ok(())
    }

    fn counters(&self) -> &Counters {
        &self.counters
    }
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
