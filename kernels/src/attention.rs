//! One head of attention on the device: `softmax(Q K^T) V` as three kernels whose
//! intermediate results never leave the device.
//!
//! 1. The GEMM `S = Q K^T` writes the scores in bfloat16 into a device buffer of
//!    `qk.m_pad x width` values, `width = qk.n_pad`. The softmax rounds its input to
//!    bfloat16 first (`kernels/src/softmax.rs`, step 1), so rounding the GEMM's output to
//!    bfloat16 on the device gives the same bits as sending float32 scores to the softmax.
//! 2. The softmax reads the first `n` values of each of the `m` rows of `S` (a row stride of
//!    `width`) and writes the probabilities `P` at the same places of a second buffer, whose
//!    other values are zeros, written once when the buffer is made.
//! 3. The GEMM `O = P V` reads `P` as its A operand with K padded to `width` (the zero
//!    columns of `P` meet zero rows of `V`), and only `O` returns to the host, in float32.
//!
//! Under [`crate::gemm::Precision::Bf16x3`] the softmax is float32 and runs on the host
//! ([`GemmContract::softmax_gelu_on_device`]): the scores come back in float32, and the
//! probabilities go out as the expanded A of `P V` ([`crate::gemm::split`]), so a head is two
//! GEMM calls with the host's softmax between them.
//!
//! The numerics are those of [`crate::device::Device::matmul_act`], then
//! [`crate::device::Device::softmax`], then `matmul_act`: the three-call chain and the fused
//! call give the same bits; only the traffic differs. The layouts come from
//! [`GemmContract::layout`], shared by the emulator, the NPU and the placement report.

use crate::device::{AttentionDims, KernelNeed, Traffic};
use crate::gemm::{GemmContract, GemmLayout};
use crate::hw::cost::TileEnd;
use crate::strided::{Heads, HeadsMut};

/// How one head of attention is padded and cut into dispatches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionLayout {
    /// The sizes.
    pub dims: AttentionDims,
    /// `Q [m, d] @ K^T [d, n]`: C in bfloat16 on the device (under bf16x3, float32 back to
    /// the host, K the expanded reduction).
    pub qk: GemmLayout,
    /// The row stride of the scores and the probabilities on the device: `qk.n_pad`.
    pub width: usize,
    /// `P [m, n] @ V [n, dv]`, K padded to `width` (under bf16x3, to the expanded `width`,
    /// P sent from the host).
    pub pv: GemmLayout,
}

impl GemmContract {
    /// The layout of one head of attention of `dims`.
    pub fn attention(&self, dims: AttentionDims) -> AttentionLayout {
        let qk = self.layout(dims.m, dims.d, dims.n);
        // n_pad is a multiple of the array's column block, itself a multiple of the k-tile.
        let width = qk.n_pad;
        let pv = if self.softmax_gelu_on_device() {
            self.layout_with_k_pad(dims.m, dims.n, dims.dv, width)
        } else {
            // The probabilities come from the host, expanded: K padded as any operand's.
            self.layout(dims.m, dims.n, dims.dv)
        };
        AttentionLayout {
            dims,
            qk,
            width,
            pv,
        }
    }
}

impl AttentionLayout {
    /// The softmax's one dispatch: `m` rows of `n` values, `width` apart.
    pub fn softmax_need(&self) -> KernelNeed {
        KernelNeed::softmax(self.dims.m, self.dims.n, self.width)
    }

    /// Bytes of the scores the first product writes on the device, in bfloat16: every row
    /// of its dispatches.
    pub fn scores_bytes(&self) -> usize {
        self.qk.rows_sent() * self.width * 2
    }

    /// Rows of the scores and probabilities buffers on the device: enough for every dispatch
    /// of either product (the last one may run past `m_pad`).
    pub fn rows(&self) -> usize {
        self.qk.rows_sent().max(self.pv.rows_sent())
    }

    /// The kernels of one call and what each moves, in the order they run: the product
    /// `Q K^T` (Q and K^T sent, nothing read back), the softmax (nothing crosses between host
    /// and device), the product `P V` (V sent, the output read back). Under bf16x3 the two
    /// products only, each an ordinary call of activations (the scores read back in float32,
    /// the probabilities sent with V), the softmax on the host between them.
    pub fn calls(&self, contract: &GemmContract) -> Vec<(KernelNeed, Traffic)> {
        let (qk, pv) = (&self.qk, &self.pv);
        if !contract.softmax_gelu_on_device() {
            return vec![
                (
                    KernelNeed::gemm(qk, false, false),
                    Traffic::gemm(contract, qk, false, TileEnd::None),
                ),
                (
                    KernelNeed::gemm(pv, false, false),
                    Traffic::gemm(contract, pv, false, TileEnd::None),
                ),
            ];
        }
        // The scores stay on the device in bfloat16: nothing read back, but the array's DMAs
        // write them (the design's C).
        let qk_traffic = Traffic {
            bytes_out: 0,
            ..Traffic::gemm(contract, qk, false, TileEnd::Bf16)
        };
        // The softmax's DMAs read the `n` values of each of the `m` rows and write as many.
        let softmax_traffic = Traffic::streamed(
            contract,
            1,
            crate::hw::cost::softmax_cycles(self.dims.m, self.dims.n),
            self.dims.m * self.dims.n * 2,
        );
        let pv_traffic = Traffic {
            bytes_in: pv.weight_bytes() as u64,
            ..Traffic::gemm(contract, pv, false, TileEnd::None)
        };
        vec![
            (KernelNeed::gemm_bf16_out(qk), qk_traffic),
            (self.softmax_need(), softmax_traffic),
            (KernelNeed::gemm(pv, false, false), pv_traffic),
        ]
    }
}

/// Runs `f` on every block of up to `block_rows` queries of every head, all the blocks of all
/// the heads spread over rayon's current pool at once (the pool waits once for the layer, not
/// once a head): `f(head, queries, outputs)` with the head's own data from `per_head`, the
/// block's queries (`rows * d` values, row-major: borrowed from `q` when they are laid out so,
/// else gathered) and a row-major `rows * dv` buffer that `f` fills, then written as those
/// rows of `out`.
pub(crate) fn for_each_query_block<T: Sync>(
    q: &Heads<'_>,
    out: &HeadsMut<'_>,
    per_head: &[T],
    block_rows: usize,
    f: impl Fn(&T, &[f32], &mut [f32]) + Sync,
) {
    use rayon::prelude::*;
    use std::cell::RefCell;
    let [heads, m, _] = q.shape();
    let dv = out.shape()[2];
    if m == 0 || dv == 0 || heads == 0 {
        return;
    }
    assert!(
        per_head.len() >= heads && out.shape()[..2] == [heads, m],
        "a block's head and rows"
    );
    thread_local! {
        static BLOCK: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
    }
    let blocks = m.div_ceil(block_rows);
    (0..heads * blocks).into_par_iter().for_each(|t| {
        let (h, b) = (t / blocks, t % blocks);
        let r0 = b * block_rows;
        let rows = block_rows.min(m - r0);
        BLOCK.with_borrow_mut(|(q_buf, o)| {
            let q_rows = q.rows(h, r0, rows, q_buf);
            o.clear();
            o.resize(rows * dv, 0.0);
            f(&per_head[h], q_rows, o);
            for (r, row) in o.chunks_exact(dv).enumerate() {
                // SAFETY: each task writes the rows of its own (head, block), no other.
                unsafe { out.write_row(h, r0 + r, row) };
            }
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whisper_head() -> AttentionDims {
        AttentionDims {
            m: 1500,
            d: 64,
            n: 1500,
            dv: 64,
        }
    }

    #[test]
    fn whisper_head_pads_once_and_keeps_scores_on_the_device() {
        let c = GemmContract::XDNA1;
        let l = c.attention(whisper_head());
        assert_eq!((l.qk.m_pad, l.qk.k_pad, l.width), (1536, 64, 1536));
        assert_eq!((l.qk.m_chunk, l.qk.dispatches), (1536, 1));
        // P V: K = 1500 padded to the scores' width; 1536-value rows: 512 rows a dispatch.
        assert_eq!((l.pv.k, l.pv.k_pad, l.pv.n_pad), (1500, 1536, 128));
        assert_eq!((l.pv.m_chunk, l.pv.dispatches), (512, 3));
        let calls = l.calls(&c);
        let [(qk_need, qk), (sm_need, sm), (pv_need, pv)] = &calls[..] else {
            panic!("three calls: {calls:?}")
        };
        assert_eq!(qk_need.to_string(), "MatMul [1536, 64, 1536] to bf16");
        assert_eq!(sm_need.to_string(), "Softmax [1500, 1500, 1536]");
        assert_eq!(pv_need.to_string(), "MatMul [512, 1536, 128]");
        // Host traffic: Q and K^T in, V in, O out; the 1536 x 1536 scores never cross.
        assert_eq!(qk.bytes_in, 2 * 1536 * 64 * 2);
        assert_eq!((qk.bytes_out, sm.bytes_in, sm.bytes_out), (0, 0, 0));
        assert_eq!(pv.bytes_in, 1536 * 128 * 2);
        assert_eq!(pv.bytes_out, 1536 * 128 * 4);
        assert_eq!(qk.flops + pv.flops, 2 * 2 * 1500 * 64 * 1500);
        assert_eq!(qk.dispatches + sm.dispatches + pv.dispatches, 5);
        // Against the three separate calls, the host traffic of one head drops from the
        // scores out, back in and out again to nothing.
        let chain_in = c.layout(1500, 64, 1500).bytes_in(false)
            + 1536 * 1500 * 2
            + c.layout(1500, 1500, 64).bytes_in(false);
        assert!(chain_in > 4 * (qk.bytes_in + pv.bytes_in) as usize);
    }

    /// bf16x3: two products of expanded operands (K three times as long), the scores back in
    /// float32 and the probabilities out for the host's float32 softmax.
    #[test]
    fn bf16x3_head_is_two_products_around_the_hosts_softmax() {
        use crate::gemm::Precision;
        let c = GemmContract::XDNA1.with_precision(Precision::Bf16x3);
        let l = c.attention(whisper_head());
        let calls = l.calls(&c);
        let [(qk_need, qk), (pv_need, pv)] = &calls[..] else {
            panic!("two calls: {calls:?}")
        };
        assert_eq!(qk_need.to_string(), "MatMul [1536, 192, 1536]");
        // K = 1500 pads to 1536, expanded to 4608: 2 MiB of staging holds 227 such rows, so
        // dispatches of one 256-row block (the floor).
        assert_eq!(pv_need.to_string(), "MatMul [256, 4608, 128]");
        assert_eq!(qk.bytes_in, (1536 * 192 + 192 * 1536) as u64 * 2);
        assert_eq!(qk.bytes_out, 1536 * 1536 * 4);
        assert_eq!(pv.bytes_in, (1536 * 4608 + 4608 * 128) as u64 * 2);
        assert_eq!(pv.bytes_out, 1536 * 128 * 4);
        assert_eq!(qk.flops + pv.flops, 2 * 2 * 1500 * 64 * 1500);
        assert_eq!(qk.padded_flops, 2 * 1536 * 192 * 1536);
    }

    #[test]
    fn odd_key_counts_pad_the_probabilities_to_the_score_width() {
        // n = 70: the scores are 128 wide, one k-tile more than 70 needs.
        let l = GemmContract::XDNA1.attention(AttentionDims {
            m: 3,
            d: 5,
            n: 70,
            dv: 7,
        });
        assert_eq!((l.width, l.pv.k_pad), (128, 128));
        assert_eq!(l.softmax_need().shape, vec![3, 70, 128]);
    }
}
