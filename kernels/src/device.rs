//! The device interface: what a backend that runs the kernel contract offers, the kernels a
//! plan needs of it, and the operand checks every device makes.
//!
//! Three implementations exist: [`crate::emulator::Emulator`] (the contract on the CPU),
//! [`crate::cpu::CpuDevice`] (plain float32) and the XRT device [`crate::npu::Npu`]. The
//! emulator counts the traffic the layouts give ([`Counters`]); the XRT device counts what
//! its host code sends and reads back, which the layouts must equal (tested on a fake XRT).

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use crate::gemm::{GemmContract, GemmLayout};

pub use crate::counters::{Counters, Snapshot, Traffic};
pub use crate::stream::StreamLayout;
pub use crate::strided::{Heads, HeadsMut};

/// Why a device cannot do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// No device of this kind can be used here; the message says why and what to install.
    #[error("{0}")]
    Unavailable(String),
    /// The operands do not fit the contract (lengths, shapes).
    #[error("{0}")]
    Shape(String),
    /// The device failed while running (a timeout, an error state), with its own message.
    #[error("device error: {0}")]
    Run(String),
}

/// A weight matrix `B[k, n]` (and optional bias `[n]`) prepared once for a device: rounded,
/// laid out and, on a real device, uploaded.
pub struct Weights {
    k: usize,
    n: usize,
    has_bias: bool,
    data: Box<dyn Any + Send + Sync>,
}

impl Weights {
    /// Wraps device-specific prepared data for `[k, n]` weights.
    pub fn new(k: usize, n: usize, has_bias: bool, data: Box<dyn Any + Send + Sync>) -> Weights {
        Weights {
            k,
            n,
            has_bias,
            data,
        }
    }

    /// The reduction length.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Columns.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Whether a bias is added in the epilogue.
    pub fn has_bias(&self) -> bool {
        self.has_bias
    }

    /// The device's own data, for the device that made it.
    pub fn data<T: 'static>(&self) -> Option<&T> {
        self.data.downcast_ref()
    }
}

impl fmt::Debug for Weights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Weights[{}x{}{}]",
            self.k,
            self.n,
            if self.has_bias { "+bias" } else { "" }
        )
    }
}

/// What the GEMM does to its float32 result before it leaves the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Epilogue {
    /// `C = A @ B (+ bias)`.
    #[default]
    None,
    /// `C = gelu(A @ B (+ bias))`, with the GELU kernel's numerics (bfloat16 out).
    Gelu,
}

/// One kernel a plan needs, as a device must provide it: the kind, the shape one dispatch
/// covers (GEMM: padded M chunk, K, N; softmax: rows, values of a row, row stride; GELU:
/// values) and, for the GEMM, whether a bias and a GELU follow and whether C is written in
/// bfloat16 for another kernel to read on the device.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KernelNeed {
    /// The kernel.
    pub kernel: Kernel,
    /// The shape of one dispatch.
    pub shape: Vec<usize>,
    /// GEMM only: a bias is added.
    pub bias: bool,
    /// GEMM only: GELU follows.
    pub gelu: bool,
    /// GEMM only: C is bfloat16 (rounded as the contract says) rather than float32.
    pub bf16_out: bool,
}

impl KernelNeed {
    /// The GEMM of `layout`, C in float32.
    pub fn gemm(layout: &GemmLayout, bias: bool, gelu: bool) -> KernelNeed {
        KernelNeed {
            kernel: Kernel::MatMul,
            shape: vec![layout.m_chunk, layout.k_pad, layout.n_pad],
            bias,
            gelu,
            bf16_out: false,
        }
    }

    /// How a GEMM's output tiles end in its kernel (the bias, GELU, the bfloat16 rounding):
    /// what the design's cost depends on besides the shape ([`crate::hw::cost`]). A GELU
    /// without a bias runs the `bias_gelu` kernel over a bias of zeros.
    pub fn tile_end(&self) -> crate::hw::cost::TileEnd {
        use crate::hw::cost::TileEnd;
        match (self.bf16_out, self.bias, self.gelu) {
            (true, _, _) => TileEnd::Bf16,
            (false, _, true) => TileEnd::BiasGelu,
            (false, true, false) => TileEnd::Bias,
            (false, false, false) => TileEnd::None,
        }
    }

    /// The GEMM a product with weights runs on `contract`'s device: the bias with `bias`, and
    /// GELU in the epilogue with `gelu` where the contract runs GELU on the device (elsewhere
    /// the host applies it after the bias).
    pub fn weights_gemm(
        contract: &GemmContract,
        layout: &GemmLayout,
        bias: bool,
        gelu: bool,
    ) -> KernelNeed {
        KernelNeed::gemm(layout, bias, gelu && contract.softmax_gelu_on_device())
    }

    /// The GEMM of `layout` with no epilogue and C in bfloat16, left on the device.
    pub fn gemm_bf16_out(layout: &GemmLayout) -> KernelNeed {
        KernelNeed {
            bf16_out: true,
            ..KernelNeed::gemm(layout, false, false)
        }
    }

    /// The softmax or GELU of `stream` (a softmax's rows back to back).
    pub fn stream(kernel: Kernel, stream: &StreamLayout) -> KernelNeed {
        match kernel {
            Kernel::Softmax => {
                KernelNeed::softmax(stream.rows_per_dispatch, stream.cols, stream.cols)
            }
            _ => KernelNeed {
                kernel,
                shape: vec![stream.rows_per_dispatch * stream.cols],
                bias: false,
                gelu: false,
                bf16_out: false,
            },
        }
    }

    /// A softmax dispatch over `rows` rows of `cols` values, `stride` values apart.
    pub fn softmax(rows: usize, cols: usize, stride: usize) -> KernelNeed {
        KernelNeed {
            kernel: Kernel::Softmax,
            shape: vec![rows, cols, stride],
            bias: false,
            gelu: false,
            bf16_out: false,
        }
    }
}

impl fmt::Display for KernelNeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} {:?}", self.kernel, self.shape)?;
        if self.kernel != Kernel::MatMul {
            return Ok(());
        }
        match (self.bias, self.gelu) {
            (_, true) => f.write_str(" with bias and GELU")?,
            (true, false) => f.write_str(" with bias")?,
            _ => {}
        }
        if self.bf16_out {
            f.write_str(" to bf16")?;
        }
        Ok(())
    }
}

/// A device that runs the kernel contract: the GEMM, Softmax and GELU kernels.
///
/// Every call is one kernel invocation as the plan sees it; the device cuts it into
/// dispatches as the contract says and counts them in [`Device::counters`].
pub trait Device: Send + Sync + fmt::Debug {
    /// The prefix of the op names that run here (`Npu`, `Emu`).
    fn prefix(&self) -> &'static str;

    /// The GEMM contract this device implements.
    fn contract(&self) -> &GemmContract;

    /// Whether this device is the CPU itself ([`crate::cpu::CpuDevice`]): its ops count as CPU
    /// ops in placement reports, and it moves nothing anywhere.
    fn is_cpu(&self) -> bool {
        false
    }

    /// Rounds, lays out and uploads a weight matrix `b` (`[k, n]`, row-major) and its bias.
    fn prepare_weights(
        &self,
        b: &[f32],
        k: usize,
        n: usize,
        bias: Option<&[f32]>,
    ) -> Result<Arc<Weights>, DeviceError>;

    /// `c[m, n] = epilogue(a[m, k] @ w (+ bias))`, row-major.
    fn matmul(
        &self,
        a: &[f32],
        m: usize,
        w: &Weights,
        epilogue: Epilogue,
        c: &mut [f32],
    ) -> Result<(), DeviceError>;

    /// `c[m, n] = a[m, k] @ b[k, n]` with two activation operands (attention's products):
    /// both are rounded and sent at every call.
    fn matmul_act(
        &self,
        a: &[f32],
        b: &[f32],
        dims: (usize, usize, usize),
        c: &mut [f32],
    ) -> Result<(), DeviceError>;

    /// One head of attention as one call: `out[m, dv] = softmax(q[m, d] @ kt[d, n]) @
    /// v[n, dv]`, row-major, with the numerics of [`Device::matmul_act`] and
    /// [`Device::softmax`] in that order. Q, K^T and V are sent and the output read back;
    /// the scores and the probabilities stay on the device (see
    /// [`crate::attention::AttentionLayout`]).
    fn attention(
        &self,
        q: &[f32],
        kt: &[f32],
        v: &[f32],
        dims: AttentionDims,
        out: &mut [f32],
    ) -> Result<(), DeviceError>;

    /// [`Device::attention`] for `heads` heads at once, each operand holding its heads one
    /// after the other (`q` is `[heads, m, d]`, `kt` `[heads, d, n]`, `v` `[heads, n, dv]`,
    /// `out` `[heads, m, dv]`): one call a head, unless the device does better.
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
        let AttentionDims { m, d, n, dv } = dims;
        let (qs, ks, vs, os) = (m * d, d * n, n * dv, m * dv);
        for h in 0..heads {
            self.attention(
                &q[h * qs..][..qs],
                &kt[h * ks..][..ks],
                &v[h * vs..][..vs],
                dims,
                &mut out[h * os..][..os],
            )?;
        }
        Ok(())
    }

    /// [`Device::attention_heads`] on operands at any strides, as the graph holds them:
    /// `q` is `[heads, m, d]`, `kt` `[heads, d, n]`, `v` `[heads, n, dv]` and `out`
    /// `[heads, m, dv]` (a Whisper layer's `[positions, heads * 64]` activations read per
    /// head, say). This default copies them into row-major arrays and the result back; a
    /// device that reads strided operands itself saves those copies.
    fn attention_strided(
        &self,
        q: Heads<'_>,
        kt: Heads<'_>,
        v: Heads<'_>,
        out: &mut HeadsMut<'_>,
    ) -> Result<(), DeviceError> {
        let (heads, dims) = checks::attention_strided(&q, &kt, &v, out)?;
        let mut o = vec![0f32; heads * dims.m * dims.dv];
        self.attention_heads(
            &q.to_row_major(),
            &kt.to_row_major(),
            &v.to_row_major(),
            dims,
            heads,
            &mut o,
        )?;
        out.write_all(&o);
        Ok(())
    }

    /// Softmax over each row of `x` (`cols` values a row), in place.
    fn softmax(&self, x: &mut [f32], cols: usize) -> Result<(), DeviceError>;

    /// GELU of every value of `x`, in place.
    fn gelu(&self, x: &mut [f32]) -> Result<(), DeviceError>;

    /// The traffic counters.
    fn counters(&self) -> &Counters;

    /// Whether this device can run every kernel in `needs`; the error lists what is missing.
    /// A device that runs any shape (the emulator) accepts everything.
    fn check_plan(&self, needs: &[KernelNeed]) -> Result<(), DeviceError> {
        let _ = needs;
        Ok(())
    }
}

/// The operand checks every device makes before a call: lengths that do not fill the stated
/// shapes are refused with [`DeviceError::Shape`], naming the operand.
pub mod checks {
    use super::{DeviceError, Heads, HeadsMut, Weights};

    fn len(what: &str, got: usize, expected: usize) -> Result<(), DeviceError> {
        if got == expected {
            Ok(())
        } else {
            Err(DeviceError::Shape(format!(
                "{what} holds {got} values, the shape says {expected}"
            )))
        }
    }

    /// [`super::Device::prepare_weights`]'s operands.
    pub fn weights(b: &[f32], k: usize, n: usize, bias: Option<&[f32]>) -> Result<(), DeviceError> {
        len("B", b.len(), k * n)?;
        bias.map_or(Ok(()), |bias| len("the bias", bias.len(), n))
    }

    /// [`super::Device::matmul`]'s operands.
    pub fn matmul(a: &[f32], m: usize, w: &Weights, c: &[f32]) -> Result<(), DeviceError> {
        len("A", a.len(), m * w.k())?;
        len("C", c.len(), m * w.n())
    }

    /// [`super::Device::matmul_act`]'s operands.
    pub fn matmul_act(
        a: &[f32],
        b: &[f32],
        (m, k, n): (usize, usize, usize),
        c: &[f32],
    ) -> Result<(), DeviceError> {
        len("A", a.len(), m * k)?;
        len("B", b.len(), k * n)?;
        len("C", c.len(), m * n)
    }

    /// [`super::Device::attention`]'s operands.
    pub fn attention(
        q: &[f32],
        kt: &[f32],
        v: &[f32],
        d: super::AttentionDims,
        out: &[f32],
    ) -> Result<(), DeviceError> {
        if d.n == 0 {
            return Err(DeviceError::Shape(
                "attention over no positions (softmax over an empty row)".into(),
            ));
        }
        len("Q", q.len(), d.m * d.d)?;
        len("K^T", kt.len(), d.d * d.n)?;
        len("V", v.len(), d.n * d.dv)?;
        len("the output", out.len(), d.m * d.dv)
    }

    /// [`super::Device::attention_heads`]'s operands.
    pub fn attention_heads(
        q: &[f32],
        kt: &[f32],
        v: &[f32],
        d: super::AttentionDims,
        heads: usize,
        out: &[f32],
    ) -> Result<(), DeviceError> {
        if d.n == 0 {
            return Err(DeviceError::Shape(
                "attention over no positions (softmax over an empty row)".into(),
            ));
        }
        len("Q", q.len(), heads * d.m * d.d)?;
        len("K^T", kt.len(), heads * d.d * d.n)?;
        len("V", v.len(), heads * d.n * d.dv)?;
        len("the output", out.len(), heads * d.m * d.dv)
    }

    /// [`super::Device::attention_strided`]'s operands: their heads and sizes, or the
    /// error naming the first that disagrees.
    pub fn attention_strided(
        q: &Heads<'_>,
        kt: &Heads<'_>,
        v: &Heads<'_>,
        out: &HeadsMut<'_>,
    ) -> Result<(usize, super::AttentionDims), DeviceError> {
        let [heads, m, d] = q.shape();
        let n = kt.shape()[2];
        let dv = v.shape()[2];
        let dims = super::AttentionDims { m, d, n, dv };
        if n == 0 {
            return Err(DeviceError::Shape(
                "attention over no positions (softmax over an empty row)".into(),
            ));
        }
        for (what, got, want) in [
            ("K^T", kt.shape(), [heads, d, n]),
            ("V", v.shape(), [heads, n, dv]),
            ("the output", out.shape(), [heads, m, dv]),
        ] {
            if got != want {
                return Err(DeviceError::Shape(format!(
                    "attention with Q of shape {:?}: {what} has shape {got:?}, not {want:?}",
                    q.shape()
                )));
            }
        }
        Ok((heads, dims))
    }

    /// [`super::Device::softmax`]'s operand.
    pub fn softmax(x: &[f32], cols: usize) -> Result<(), DeviceError> {
        if cols == 0 || !x.len().is_multiple_of(cols) {
            return Err(DeviceError::Shape(format!(
                "softmax over rows of {cols} values given {} values",
                x.len()
            )));
        }
        Ok(())
    }

    /// The device's own data of `w`, or the error that they were made by another device.
    pub fn own<T: 'static>(w: &Weights) -> Result<&T, DeviceError> {
        w.data::<T>().ok_or_else(|| {
            DeviceError::Shape("these weights were prepared for another device".into())
        })
    }
}

/// The sizes of one head of attention: `m` queries of `d` values, `n` keys, values of `dv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AttentionDims {
    /// Queries (rows of the scores).
    pub m: usize,
    /// The length of a query and a key.
    pub d: usize,
    /// Keys and values (columns of the scores).
    pub n: usize,
    /// The length of a value.
    pub dv: usize,
}

/// Kernel kinds, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kernel {
    /// The GEMM (with its epilogues).
    MatMul,
    /// Softmax.
    Softmax,
    /// GELU.
    Gelu,
}

impl Kernel {
    /// Every kind, in report order.
    pub const ALL: [Kernel; 3] = [Kernel::MatMul, Kernel::Softmax, Kernel::Gelu];

    /// Its index in [`Kernel::ALL`] and [`Snapshot::kernels`].
    pub fn index(self) -> usize {
        self as usize
    }
}
