//! The emulated device: the kernel contract computed on the CPU with the kernels' exact
//! numerics, counting the dispatches and bytes a device would see.

use std::cell::RefCell;
use std::sync::Arc;

use crate::attention::for_each_query_block;
use crate::device::{
    AttentionDims, Counters, Device, DeviceError, Epilogue, Heads, HeadsMut, Kernel, KernelNeed,
    StreamLayout, Traffic, Weights, checks,
};
use crate::gemm::{GemmContract, Precision, split};
use crate::hw::cost::TileEnd;
use crate::packed_gemm::{self, PackedB};
use crate::{cpu_math, gelu, softmax};

use rayon::prelude::*;

/// Queries of attention computed together: eight groups of the AVX-512 micro-kernel's rows.
const QUERY_BLOCK: usize = 96;

/// Weights as the emulator keeps them: B packed in bfloat16 values, and the bias.
#[derive(Debug)]
struct EmuWeights {
    packed: PackedB,
    bias: Option<Vec<f32>>,
}

/// The kernel contract on the CPU (`--backend emu`). Work is spread over rayon's current pool;
/// results do not depend on the number of threads.
#[derive(Debug)]
pub struct Emulator {
    contract: GemmContract,
    counters: Counters,
}

impl Emulator {
    /// An emulator of `contract`.
    pub fn new(contract: GemmContract) -> Emulator {
        Emulator {
            contract,
            counters: Counters::default(),
        }
    }
}

impl Emulator {
    /// B packed under the contract: as it is, or split into its bfloat16 parts
    /// ([`split::expand_b`]) for [`Precision::Bf16x3`].
    fn pack_b(&self, b: &[f32], k: usize, n: usize) -> PackedB {
        match self.contract.precision {
            Precision::Bf16 | Precision::Bf16Host => PackedB::new(&self.contract, b, k, n),
            Precision::Bf16x3 => {
                let expanded = split::expand_b(&self.contract, b, k, n);
                let k3 = split::expanded_k(&self.contract, k);
                PackedB::new(&split::expanded(&self.contract), &expanded, k3, n)
            }
        }
    }

    /// The GELU kernel's values: the bfloat16 contract's, or float32 on the host
    /// ([`GemmContract::softmax_gelu_on_device`]).
    fn gelu_values(&self, x: &mut [f32]) {
        if self.contract.softmax_gelu_on_device() {
            gelu::gelu(self.contract.rounding, x)
        } else {
            cpu_math::gelu_par(x)
        }
    }

    /// A as the packed B of [`Emulator::pack_b`] takes it: as it is, or split.
    fn expand_a<'a>(&self, a: &'a [f32], m: usize, k: usize) -> std::borrow::Cow<'a, [f32]> {
        match self.contract.precision {
            Precision::Bf16 | Precision::Bf16Host => std::borrow::Cow::Borrowed(a),
            Precision::Bf16x3 => std::borrow::Cow::Owned(split::expand_a(&self.contract, a, m, k)),
        }
    }
}

impl Device for Emulator {
    fn prefix(&self) -> &'static str {
        "Emu"
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
        let packed = self.pack_b(b, k, n);
        self.counters
            .record_weights(self.contract.layout(1, k, n).upload_bytes(bias.is_some()));
        Ok(Arc::new(Weights::new(
            k,
            n,
            bias.is_some(),
            Box::new(EmuWeights {
                packed,
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
        let ew = checks::own::<EmuWeights>(w)?;
        checks::matmul(a, m, w, c)?;
        packed_gemm::gemm(
            self.contract.rounding,
            &self.expand_a(a, m, w.k()),
            m,
            &ew.packed,
            ew.bias.as_deref(),
            c,
        );
        if epilogue == Epilogue::Gelu {
            self.gelu_values(c);
        }
        let layout = self.contract.layout(m, w.k(), w.n());
        let gelu = epilogue == Epilogue::Gelu;
        let end =
            KernelNeed::weights_gemm(&self.contract, &layout, ew.bias.is_some(), gelu).tile_end();
        self.counters.record(
            Kernel::MatMul,
            Traffic::gemm(&self.contract, &layout, true, end),
        );
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
        let packed = self.pack_b(b, k, n);
        packed_gemm::gemm(
            self.contract.rounding,
            &self.expand_a(a, m, k),
            m,
            &packed,
            None,
            c,
        );
        let layout = self.contract.layout(m, k, n);
        self.counters.record(
            Kernel::MatMul,
            Traffic::gemm(&self.contract, &layout, false, TileEnd::None),
        );
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

    /// Every head's chain of three kernels, in blocks of `QUERY_BLOCK` queries spread over
    /// the pool all at once: each row's scores, softmax and output depend on that row alone,
    /// so a block of rows gives the bits of the whole, and its scores (96 x 1500 float32
    /// values, 576 KB) stay in the core's cache instead of a 9 MB matrix a head going through
    /// memory three times.
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

    /// Every head in blocks of queries spread over the pool, operands read where they are:
    /// K^T and V gathered a head at a time for packing, the queries a block at a time.
    fn attention_strided(
        &self,
        q: Heads<'_>,
        kt: Heads<'_>,
        v: Heads<'_>,
        out: &mut HeadsMut<'_>,
    ) -> Result<(), DeviceError> {
        let (heads, dims) = checks::attention_strided(&q, &kt, &v, out)?;
        let AttentionDims { m, d, n, dv } = dims;
        let rounding = self.contract.rounding;
        if m > 0 && dv > 0 && heads > 0 {
            let packed: Vec<(PackedB, PackedB)> = (0..heads)
                .into_par_iter()
                .map(|h| {
                    let (mut kt_buf, mut v_buf) = (Vec::new(), Vec::new());
                    (
                        self.pack_b(kt.rows(h, 0, d, &mut kt_buf), d, n),
                        self.pack_b(v.rows(h, 0, n, &mut v_buf), n, dv),
                    )
                })
                .collect();
            let on_host = !self.contract.softmax_gelu_on_device();
            thread_local! {
                // One block's scores, reused block after block.
                static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
            }
            for_each_query_block(&q, out, &packed, QUERY_BLOCK, |(kt, v), q, o| {
                let rows = o.len() / dv;
                SCORES.with_borrow_mut(|scores| {
                    scores.clear();
                    scores.resize(rows * n, 0.0);
                    if on_host {
                        // The scores back in float32, the softmax on the host, the
                        // probabilities sent as `P V`'s A (expanded under bf16x3).
                        let q = self.expand_a(q, rows, d);
                        packed_gemm::gemm_rows(rounding, &q, rows, kt, None, scores);
                        cpu_math::softmax_rows(scores, n);
                        let p = self.expand_a(scores, rows, n);
                        packed_gemm::gemm_rows(rounding, &p, rows, v, None, o);
                        return;
                    }
                    packed_gemm::gemm_rows(rounding, q, rows, kt, None, scores);
                    softmax::softmax_rows_here(rounding, scores, n);
                    // The softmax's values are bfloat16 already.
                    packed_gemm::gemm_rows_bf16(scores, rows, v, None, o);
                });
            });
        }
        let calls = self.contract.attention(dims).calls(&self.contract);
        for _ in 0..heads {
            for (need, traffic) in &calls {
                self.counters.record(need.kernel, *traffic);
            }
        }
        Ok(())
    }

    fn softmax(&self, x: &mut [f32], cols: usize) -> Result<(), DeviceError> {
        checks::softmax(x, cols)?;
        if x.is_empty() {
            return Ok(());
        }
        if !self.contract.softmax_gelu_on_device() {
            // On the host: nothing crosses.
            cpu_math::softmax_rows_par(x, cols);
            return Ok(());
        }
        softmax::softmax_rows(self.contract.rounding, x, cols);
        self.counters.record(
            Kernel::Softmax,
            Traffic::stream(
                &self.contract,
                Kernel::Softmax,
                &StreamLayout::new(&self.contract, x.len() / cols, cols),
            ),
        );
        Ok(())
    }

    fn gelu(&self, x: &mut [f32]) -> Result<(), DeviceError> {
        if x.is_empty() {
            return Ok(());
        }
        self.gelu_values(x);
        if !self.contract.softmax_gelu_on_device() {
            // On the host: nothing crosses.
            return Ok(());
        }
        self.counters.record(
            Kernel::Gelu,
            Traffic::stream(
                &self.contract,
                Kernel::Gelu,
                &StreamLayout::new(&self.contract, x.len(), 1),
            ),
        );
        Ok(())
    }

    fn counters(&self) -> &Counters {
        &self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bf16::Rounding;
    use crate::device::AttentionDims;

    fn values(len: usize, seed: u32, scale: f32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(2654435761).max(1);
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state as f32 / u32::MAX as f32 - 0.5) * scale
            })
            .collect()
    }

    /// The fused call gives the bits of the three separate calls, and moves Q, K^T and V in,
    /// the output out, the scores nowhere.
    /// Several heads in one call give each head's own call, to the bit, and count as many
    /// kernel calls.
    #[test]
    fn heads_together_are_heads_one_by_one() {
        let (heads, m, d, n, dv) = (3, 130, 16, 50, 12);
        let dims = AttentionDims { m, d, n, dv };
        let q = values(heads * m * d, 7, 6.0);
        let kt = values(heads * d * n, 8, 6.0);
        let v = values(heads * n * dv, 9, 2.0);
        let together_emu = Emulator::new(GemmContract::XDNA1);
        let mut together = vec![f32::NAN; heads * m * dv];
        together_emu
            .attention_heads(&q, &kt, &v, dims, heads, &mut together)
            .unwrap();
        let one_emu = Emulator::new(GemmContract::XDNA1);
        for h in 0..heads {
            let mut one = vec![f32::NAN; m * dv];
            one_emu
                .attention(
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
        assert_eq!(
            format!("{:?}", together_emu.counters()),
            format!("{:?}", one_emu.counters())
        );
    }

    #[test]
    fn attention_is_the_chain_of_its_three_kernels() {
        for rounding in [Rounding::NearestEven, Rounding::Truncate] {
            for dims in [
                AttentionDims {
                    m: 37,
                    d: 20,
                    n: 70,
                    dv: 9,
                },
                AttentionDims {
                    m: 300,
                    d: 64,
                    n: 300,
                    dv: 64,
                },
                AttentionDims {
                    m: 1,
                    d: 1,
                    n: 1,
                    dv: 1,
                },
            ] {
                let AttentionDims { m, d, n, dv } = dims;
                let q = values(m * d, 1, 6.0);
                let kt = values(d * n, 2, 6.0);
                let v = values(n * dv, 3, 2.0);
                let emu = Emulator::new(GemmContract::XDNA1.with_rounding(rounding));

                let mut scores = vec![0.0; m * n];
                emu.matmul_act(&q, &kt, (m, d, n), &mut scores).unwrap();
                emu.softmax(&mut scores, n).unwrap();
                let mut chain = vec![0.0; m * dv];
                emu.matmul_act(&scores, &v, (m, n, dv), &mut chain).unwrap();

                let before = emu.counters().snapshot();
                let mut fused = vec![f32::NAN; m * dv];
                emu.attention(&q, &kt, &v, dims, &mut fused).unwrap();
                let traffic = emu.counters().snapshot().since(&before);

                let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&fused), bits(&chain), "{dims:?} {rounding:?}");

                // The traffic itself is checked against the bytes a fake device measures
                // (kernels/fake-xrt): here, only that one fused call is two products and a
                // softmax that moves nothing between host and device.
                let layout = emu.contract().attention(dims);
                let mm = traffic.get(Kernel::MatMul);
                assert_eq!((mm.calls, traffic.get(Kernel::Softmax).calls), (2, 1));
                assert_eq!(
                    mm.bytes_in as usize,
                    layout.qk.bytes_in(false) + layout.width * layout.pv.n_pad * 2
                );
                assert_eq!(mm.bytes_out as usize, layout.pv.bytes_out());
                assert_eq!(traffic.get(Kernel::Softmax).bytes_in, 0);
            }
        }
    }

    /// The plan gives a product without a bias a bias of zeros (one kernel fewer): the bits
    /// are those of no bias, sums that cancel to zero included.
    #[test]
    fn a_zero_bias_changes_no_bit() {
        let (m, k, n) = (33, 130, 70);
        let mut a = values(m * k, 4, 4.0);
        let b = values(k * n, 5, 4.0);
        // Row 0 of A is zero, row 1 gives sums that cancel: +0 and -0 candidates.
        a[..k].fill(0.0);
        for j in 0..k {
            a[k + j] = if j % 2 == 0 { 1.0 } else { -1.0 };
        }
        let emu = Emulator::new(GemmContract::XDNA1);
        let plain = emu.prepare_weights(&b, k, n, None).unwrap();
        let zero = emu.prepare_weights(&b, k, n, Some(&vec![0.0; n])).unwrap();
        for epilogue in [Epilogue::None, Epilogue::Gelu] {
            let (mut c0, mut c1) = (vec![0.0; m * n], vec![0.0; m * n]);
            emu.matmul(&a, m, &plain, epilogue, &mut c0).unwrap();
            emu.matmul(&a, m, &zero, epilogue, &mut c1).unwrap();
            let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&c0), bits(&c1));
        }
    }

    /// bf16x3 as NUMERICS.md states it, written out plainly: per output, C from `+0`; every
    /// k-tile of the `hi lo` products summed from `+0` in order and added into C, then every
    /// k-tile of the `lo hi` products, then of the `hi hi` products; then the bias.
    #[test]
    fn bf16x3_is_its_statement_to_the_bit() {
        use crate::gemm::Precision;
        let contract = GemmContract::XDNA1.with_precision(Precision::Bf16x3);
        let (m, k, n) = (37, 150, 45);
        let a = values(m * k, 11, 8.0);
        let b = values(k * n, 12, 2.0);
        let bias = values(n, 13, 1.0);
        let emu = Emulator::new(contract);
        let w = emu.prepare_weights(&b, k, n, Some(&bias)).unwrap();
        let mut c = vec![f32::NAN; m * n];
        emu.matmul(&a, m, &w, Epilogue::None, &mut c).unwrap();
        let r = |x: f32| crate::bf16::round(x, Rounding::NearestEven);
        let split = |x: f32| (r(x), r(x - r(x)));
        let mut worst = 0.0f64;
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0.0f32;
                let mut exact = 0.0f64;
                let mut magnitude = 0.0f64;
                for pass in 0..3 {
                    for k0 in (0..k).step_by(64) {
                        let mut tile = 0.0f32;
                        for kk in k0..(k0 + 64).min(k) {
                            let ((ah, al), (bh, bl)) = (split(a[i * k + kk]), split(b[kk * n + j]));
                            tile += match pass {
                                0 => ah * bl,
                                1 => al * bh,
                                _ => ah * bh,
                            };
                        }
                        acc += tile;
                    }
                }
                for kk in 0..k {
                    let p = a[i * k + kk] as f64 * b[kk * n + j] as f64;
                    exact += p;
                    magnitude += p.abs();
                }
                let expected = acc + bias[j];
                assert_eq!(c[i * n + j].to_bits(), expected.to_bits(), "C[{i}, {j}]");
                let err = (c[i * n + j] as f64 - bias[j] as f64 - exact).abs();
                worst = worst.max(err / magnitude);
            }
        }
        let bound = 3.0 * 2f64.powi(-16) + 3.0 * k as f64 * 2f64.powi(-24);
        eprintln!("bf16x3: worst error {worst:.3e} of sum |a b| (bound {bound:.3e})");
        assert!(worst <= bound, "{worst} > {bound}");
        // Measured 1.41e-6 on these operands; bf16 alone gives about 2^-8 = 3.9e-3.
        assert!(worst <= 2.0e-6, "{worst}");
    }

    #[test]
    fn attention_refuses_operands_that_do_not_fill_the_shape() {
        let emu = Emulator::new(GemmContract::XDNA1);
        let dims = AttentionDims {
            m: 2,
            d: 3,
            n: 4,
            dv: 5,
        };
        let mut out = vec![0.0; 10];
        let err = emu
            .attention(&[0.0; 6], &[0.0; 11], &[0.0; 20], dims, &mut out)
            .unwrap_err();
        assert!(err.to_string().contains("K^T holds 11 values"), "{err}");
        let empty = AttentionDims { n: 0, ..dims };
        assert!(emu.attention(&[0.0; 6], &[], &[], empty, &mut out).is_err());
    }
}
