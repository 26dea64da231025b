//! `DeviceMatMul`: a matrix product (batched over any axes, with any axis order) run by the
//! device's GEMM kernel.

use std::borrow::Cow;

use amanuensis_kernels::hw::cost::TileEnd;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use std::sync::{Mutex, OnceLock};

use amanuensis_kernels::device::{
    Device, DeviceError, Epilogue, Kernel, KernelNeed, Traffic, Weights,
};
use tract_core::internal::*;
use tract_core::ndarray::{ArrayViewD, IxDyn};

use crate::device::{DeviceCall, DeviceOp};
use crate::{DeviceHandle, device_error};

/// B (`[k, n]`, row-major) and its bias, on the host.
type HostWeights = (Vec<f32>, Option<Vec<f32>>);

/// A weight matrix of the plan (B `[k, n]` and an optional bias): its values until the
/// plan's one upload step ([`upload_weights`]), the device's prepared weights after. Building
/// a plan thus touches no device: the plan is checked against the device's kernels first, and
/// only a plan that passes is uploaded.
pub struct DeviceWeights {
    k: usize,
    n: usize,
    has_bias: bool,
    host: Mutex<Option<HostWeights>>,
    prepared: OnceLock<Arc<Weights>>,
}

impl DeviceWeights {
    /// `b` (`[k, n]`, row-major) and `bias` (`n` values), not yet on any device.
    pub fn new(b: Vec<f32>, k: usize, n: usize, bias: Option<Vec<f32>>) -> DeviceWeights {
        DeviceWeights {
            k,
            n,
            has_bias: bias.is_some(),
            host: Mutex::new(Some((b, bias))),
            prepared: OnceLock::new(),
        }
    }

    /// Rows of B.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Columns of B.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Whether a bias comes with B.
    pub fn has_bias(&self) -> bool {
        self.has_bias
    }

    /// Whether [`DeviceWeights::upload`] has run.
    pub fn is_uploaded(&self) -> bool {
        self.prepared.get().is_some()
    }

    /// Prepares the weights on `device` (once; the host copy is dropped then).
    pub fn upload(&self, device: &dyn Device) -> Result<(), DeviceError> {
        let mut host = self.host.lock().expect("weights");
        if self.prepared.get().is_some() {
            return Ok(());
        }
        let (b, bias) = host
            .as_ref()
            .expect("weights not uploaded keep their values");
        let prepared = device.prepare_weights(b, self.k, self.n, bias.as_deref())?;
        let _ = self.prepared.set(prepared);
        *host = None;
        Ok(())
    }

    /// The prepared weights, or an error saying the plan was not uploaded.
    pub fn prepared(&self) -> TractResult<&Weights> {
        self.prepared.get().map(|w| &**w).ok_or_else(|| {
            anyhow!("the plan's weights were not uploaded to the device (upload_weights)")
        })
    }
}

impl fmt::Debug for DeviceWeights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Weights[{}x{}{}{}]",
            self.k,
            self.n,
            if self.has_bias { "+bias" } else { "" },
            if self.is_uploaded() {
                ""
            } else {
                ", not uploaded"
            }
        )
    }
}

/// A plan's weights, compared by identity.
#[derive(Clone)]
pub struct WeightsHandle(pub Arc<DeviceWeights>);

impl fmt::Debug for WeightsHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl PartialEq for WeightsHandle {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for WeightsHandle {}

impl Hash for WeightsHandle {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.0) as usize).hash(state)
    }
}

/// The plan's one upload step: prepares on its device the weights of every `DeviceMatMul` of
/// `model` that has not been, and returns how many were.
pub fn upload_weights(model: &TypedModel) -> TractResult<usize> {
    let mut uploaded = 0;
    for node in model.nodes() {
        if let Some(op) = node.op_as::<DeviceMatMul>()
            && let Some(w) = &op.weights
            && !w.0.is_uploaded()
        {
            w.0.upload(&*op.device).map_err(|e| {
                anyhow!(e).context(format!("uploading the weights of {}", node.name))
            })?;
            uploaded += 1;
        }
    }
    Ok(uploaded)
}

/// How the axes of an einsum-like product map onto the GEMM's `[batch, M, K] @ [batch, K, N]`.
///
/// Every axis of the product is a batch axis (in A, B and the output), an M axis (A and
/// output), a K axis (A and B: contracted) or an N axis (B and output); axes of size 1 may
/// appear in one operand or the output only. Several axes of one class are flattened
/// together in their canonical order, so a product that contracts over heads and head width
/// at once (`mbk,bkn->mn`) is one GEMM with `K = b * k`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MatMulGeometry {
    /// Permutation taking A's axes to `[batch.., M.., K.., size-1..]`.
    pub a_perm: Vec<usize>,
    /// Permutation taking B's axes to `[batch.., K.., N.., size-1..]`.
    pub b_perm: Vec<usize>,
    /// B's shape in its own axis order.
    pub b_shape: Vec<usize>,
    /// The canonical output shape: `[batch.., M.., N.., size-1..]`.
    pub canon_shape: Vec<usize>,
    /// Permutation taking the canonical output to the output's axis order.
    pub out_perm: Vec<usize>,
    /// The output's shape.
    pub out_shape: Vec<usize>,
    /// Product of the batch axes.
    pub batch: usize,
    /// Product of the M axes.
    pub m: usize,
    /// Product of the K axes.
    pub k: usize,
    /// Product of the N axes.
    pub n: usize,
    /// Positions of the N axes in the output (a bias must vary along these only).
    pub n_axes_in_output: Vec<usize>,
}

/// Where an axis sits in A, B and the output.
type Positions = (Option<usize>, Option<usize>, Option<usize>);

impl MatMulGeometry {
    /// Classifies the axes of a two-input `mapping` given the operands' concrete shapes, or
    /// says why the product is not a GEMM.
    pub fn new(mapping: &AxesMapping, a: &[usize], b: &[usize]) -> Result<MatMulGeometry, String> {
        if mapping.input_count() != 2 || mapping.output_count() != 1 {
            return Err(format!(
                "{} inputs and {} outputs, a GEMM has 2 and 1",
                mapping.input_count(),
                mapping.output_count()
            ));
        }
        let (mut batch, mut ms, mut ks, mut ns) = (vec![], vec![], vec![], vec![]);
        let (mut a_ones, mut b_ones, mut c_ones) = (vec![], vec![], vec![]);
        let mut out_rank = 0;
        for axis in mapping.iter_all_axes() {
            let (ia, ib, ic) = (&axis.inputs[0], &axis.inputs[1], &axis.outputs[0]);
            if ia.len() > 1 || ib.len() > 1 || ic.len() > 1 {
                return Err(format!("axis {} repeats within an operand", axis.repr));
            }
            out_rank += ic.len();
            let dim_a = ia.first().map(|&p| a[p]);
            let dim_b = ib.first().map(|&p| b[p]);
            let entry = (
                ia.first().copied(),
                ib.first().copied(),
                ic.first().copied(),
            );
            match (dim_a, dim_b, !ic.is_empty()) {
                (Some(da), Some(db), true) if da == db => batch.push((entry, da)),
                (Some(_), None, true) => ms.push((entry, dim_a.unwrap())),
                (Some(da), Some(db), false) if da == db => ks.push((entry, da)),
                (None, Some(_), true) => ns.push((entry, dim_b.unwrap())),
                (Some(1), None, false) => a_ones.push(entry),
                (None, Some(1), false) => b_ones.push(entry),
                (None, None, true) => c_ones.push(entry),
                (Some(da), Some(db), _) => {
                    return Err(format!("axis {} has {da} in A and {db} in B", axis.repr));
                }
                _ => {
                    return Err(format!(
                        "axis {} is summed within one operand only",
                        axis.repr
                    ));
                }
            }
        }
        let pos = |list: &[(Positions, usize)], which: usize| -> Vec<usize> {
            list.iter()
                .map(|(e, _)| match which {
                    0 => e.0.unwrap(),
                    1 => e.1.unwrap(),
                    _ => e.2.unwrap(),
                })
                .collect()
        };
        let product = |list: &[(_, usize)]| list.iter().map(|(_, d)| d).product::<usize>();
        let mut a_perm = [pos(&batch, 0), pos(&ms, 0), pos(&ks, 0)].concat();
        a_perm.extend(a_ones.iter().map(|e| e.0.unwrap()));
        let mut b_perm = [pos(&batch, 1), pos(&ks, 1), pos(&ns, 1)].concat();
        b_perm.extend(b_ones.iter().map(|e| e.1.unwrap()));
        let mut canon_out = [pos(&batch, 2), pos(&ms, 2), pos(&ns, 2)].concat();
        canon_out.extend(c_ones.iter().map(|e| e.2.unwrap()));
        let dims = |list: &[(_, usize)]| list.iter().map(|(_, d)| *d).collect::<Vec<_>>();
        let mut canon_shape = [dims(&batch), dims(&ms), dims(&ns)].concat();
        canon_shape.extend(std::iter::repeat_n(1, c_ones.len()));
        // canon_out[i] is the output position of canonical axis i; out_perm inverts it.
        let mut out_perm = vec![0; out_rank];
        let mut out_shape = vec![0; out_rank];
        for (i, &p) in canon_out.iter().enumerate() {
            out_perm[p] = i;
            out_shape[p] = canon_shape[i];
        }
        if a_perm.len() != a.len() || b_perm.len() != b.len() {
            return Err("the mapping does not cover every axis of the operands".into());
        }
        Ok(MatMulGeometry {
            a_perm,
            b_perm,
            b_shape: b.to_vec(),
            canon_shape,
            out_perm,
            out_shape,
            batch: product(&batch),
            m: product(&ms),
            k: product(&ks),
            n: product(&ns),
            n_axes_in_output: pos(&ns, 2),
        })
    }

    /// B (in its own layout) as a row-major `[K, N]` matrix, for a weight without batch axes.
    pub fn canonical_b(&self, b: ArrayViewD<f32>) -> Vec<f32> {
        canonical_cow(b, &self.b_perm).into_owned()
    }

    /// Useful floating-point operations of one product.
    pub fn flops(&self) -> u64 {
        2 * (self.batch * self.m * self.k * self.n) as u64
    }
}

/// The view's values in the order of its axes permuted by `perm`: borrowed when that order
/// is already the memory order, copied otherwise.
pub(crate) fn canonical_cow<'a>(view: ArrayViewD<'a, f32>, perm: &[usize]) -> Cow<'a, [f32]> {
    let permuted = view.clone().permuted_axes(IxDyn(perm));
    if permuted.is_standard_layout()
        && let Some(s) = permuted.to_slice()
    {
        return Cow::Borrowed(s);
    }
    match view.to_slice() {
        Some(src) => {
            let mut out = vec![0f32; src.len()];
            permute_into(src, view.shape(), perm, &mut out);
            Cow::Owned(out)
        }
        None => Cow::Owned(permuted.iter().copied().collect()),
    }
}

/// Strides, in values, of a row-major array of `shape`.
pub(crate) fn row_major_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

/// Writes the row-major `src` of `shape`, its axes permuted by `perm` (output axis `i` is
/// input axis `perm[i]`), into `dst`: runs along the last output axis are copied whole when
/// they are contiguous in `src`, gathered with a stride otherwise. Large copies are split
/// along the first output axis (of more than one index) over rayon's current pool.
pub(crate) fn permute_into(src: &[f32], shape: &[usize], perm: &[usize], dst: &mut [f32]) {
    debug_assert_eq!(src.len(), dst.len());
    let strides = row_major_strides(shape);
    // Axes of size 1 move nothing.
    let axes: Vec<(usize, usize)> = perm
        .iter()
        .map(|&p| (shape[p], strides[p]))
        .filter(|&(d, _)| d != 1)
        .collect();
    /// Below this many values, one thread copies: a task costs more than the copy.
    const PARALLEL: usize = 1 << 16;
    match axes.split_first() {
        Some((&(outer, 1), [(inner, _)])) if dst.len() >= PARALLEL => {
            // A transpose: blocks of rows of `dst` (columns of `src`) spread over the pool.
            use rayon::prelude::*;
            let rows = TRANSPOSE_BLOCK.min(outer);
            dst.par_chunks_mut(rows * inner)
                .enumerate()
                .for_each(|(i, chunk)| permute_axes(src, i * rows, &axes, chunk));
        }
        Some((&(outer, outer_stride), rest)) if !rest.is_empty() && dst.len() >= PARALLEL => {
            use rayon::prelude::*;
            dst.par_chunks_mut(dst.len() / outer)
                .enumerate()
                .for_each(|(i, chunk)| permute_axes(src, i * outer_stride, rest, chunk));
        }
        _ => permute_axes(src, 0, &axes, dst),
    }
}

/// Rows of a transposed `dst` filled together: a 64-byte line of float32 values.
const TRANSPOSE_BLOCK: usize = 16;

/// `dst[..]` in the row-major order of `axes` (each `(size, stride in src)`), read from `src`
/// starting at `base`.
fn permute_axes(src: &[f32], base: usize, axes: &[(usize, usize)], dst: &mut [f32]) {
    let Some((&(inner, inner_stride), outer)) = axes.split_last() else {
        dst.copy_from_slice(&src[base..base + dst.len()]);
        return;
    };
    if let [(_, 1)] = outer
        && inner_stride != 1
        && inner > 0
    {
        // A transpose (`dst[i][j] = src[base + i + j * inner_stride]`): blocks of
        // `TRANSPOSE_BLOCK` rows of `dst` filled together, so that each line of `src` read
        // serves as many rows (one row at a time would read every line of `src` once a row).
        for (b, block) in dst.chunks_mut(TRANSPOSE_BLOCK * inner).enumerate() {
            let i0 = base + b * TRANSPOSE_BLOCK;
            let rows = block.len() / inner;
            for j in 0..inner {
                let from = &src[i0 + j * inner_stride..][..rows];
                for (i, v) in from.iter().enumerate() {
                    block[i * inner + j] = *v;
                }
            }
        }
        return;
    }
    let mut index = vec![0usize; outer.len()];
    let mut offset = base;
    for run in dst.chunks_mut(inner) {
        if inner_stride == 1 {
            run.copy_from_slice(&src[offset..offset + inner]);
        } else {
            for (j, d) in run.iter_mut().enumerate() {
                *d = src[offset + j * inner_stride];
            }
        }
        for axis in (0..outer.len()).rev() {
            index[axis] += 1;
            offset += outer[axis].1;
            if index[axis] < outer[axis].0 {
                break;
            }
            offset -= outer[axis].1 * outer[axis].0;
            index[axis] = 0;
        }
    }
}

/// The output tensor of a product of `geometry`: `compute` fills the canonical
/// `[batch, M, N]` values, written straight into the tensor when the output's axis order is
/// the canonical one, else permuted into it.
pub(crate) fn write_output(
    geometry: &MatMulGeometry,
    compute: impl FnOnce(&mut [f32]) -> TractResult<()>,
) -> TractResult<Tensor> {
    let g = geometry;
    let identity = g.out_perm.iter().enumerate().all(|(i, &p)| i == p);
    // SAFETY: every value is written below, by `compute` or by the permuting copy.
    let mut out = unsafe { Tensor::uninitialized::<f32>(&g.out_shape)? };
    let mut scratch = Vec::new();
    {
        let mut view = out.try_as_plain_ram_mut()?;
        let c: &mut [f32] = if identity {
            view.as_slice_mut::<f32>()?
        } else {
            scratch.resize(g.batch * g.m * g.n, 0f32);
            &mut scratch
        };
        compute(c)?;
    }
    if !identity {
        let mut view = out.try_as_plain_ram_mut()?;
        permute_into(
            &scratch,
            &g.canon_shape,
            &g.out_perm,
            view.as_slice_mut::<f32>()?,
        );
    }
    Ok(out)
}

/// A matrix product on the device: `C = epilogue(A @ B (+ bias))` with the contract's
/// numerics (bfloat16 operands, float32 accumulation in k-tiles, float32 result).
///
/// With `weights`, B is a constant prepared on the device once, and the op takes A only;
/// without, it takes A and B, both activations (attention's `Q K^T` and `P V`), and loops
/// over the batch axes, one GEMM per batch index. Inputs and output are float32.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceMatMul {
    /// Where it runs.
    pub device: DeviceHandle,
    /// How the operands' axes map onto the GEMM.
    pub geometry: MatMulGeometry,
    /// B, when it is a weight.
    pub weights: Option<WeightsHandle>,
    /// What follows the product on the device.
    pub epilogue: Epilogue,
}

impl Op for DeviceMatMul {
    fn name(&self) -> StaticName {
        format!("{}MatMul", self.device.prefix()).into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let g = &self.geometry;
        let mut info = vec![format!(
            "[{}] x [{}x{}] @ [{}x{}]{}",
            g.batch,
            g.m,
            g.k,
            g.k,
            g.n,
            if self.weights.is_some() {
                " (weights on device)"
            } else {
                ""
            }
        )];
        if self.weights.as_ref().is_some_and(|w| w.0.has_bias()) {
            info.push("epilogue: + bias".into());
        }
        if self.epilogue == Epilogue::Gelu {
            info.push("epilogue: GELU".into());
        }
        Ok(info)
    }

    op_as_typed_op!();
}

impl DeviceMatMul {
    /// `c = epilogue(a @ B)` for canonical `a` (`[batch, m, k]`), into canonical `c`.
    fn compute(&self, inputs: &[TValue], a: &[f32], c: &mut [f32]) -> TractResult<()> {
        let g = &self.geometry;
        match &self.weights {
            Some(w) => {
                ensure!(inputs.len() == 1, "{} takes A only", self.name());
                self.device
                    .matmul(a, g.batch * g.m, w.0.prepared()?, self.epilogue, c)
                    .map_err(device_error)?;
            }
            None => {
                ensure!(inputs.len() == 2, "{} takes A and B", self.name());
                let b = inputs[1].to_plain_array_view::<f32>()?;
                let b = canonical_cow(b, &g.b_perm);
                let (mk, kn, mn) = (g.m * g.k, g.k * g.n, g.m * g.n);
                for i in 0..g.batch {
                    self.device
                        .matmul_act(
                            &a[i * mk..(i + 1) * mk],
                            &b[i * kn..(i + 1) * kn],
                            (g.m, g.k, g.n),
                            &mut c[i * mn..(i + 1) * mn],
                        )
                        .map_err(device_error)?;
                }
                if self.epilogue == Epilogue::Gelu {
                    self.device.gelu(c).map_err(device_error)?;
                }
            }
        }
        Ok(())
    }
}

impl DeviceOp for DeviceMatMul {
    fn device(&self) -> &DeviceHandle {
        &self.device
    }

    /// One GEMM kernel: with weights, its bias and GELU in the epilogue and the weights
    /// uploaded once; without, one call a batch index, and a GELU after the products as its
    /// own kernel (as [`DeviceMatMul`]'s evaluation runs them).
    fn device_calls(&self, _output_shape: &[usize]) -> Vec<DeviceCall> {
        if self.device.is_cpu() {
            return Vec::new();
        }
        let (g, contract) = (&self.geometry, self.device.contract());
        let layout = contract.layout(g.m, g.k, g.n);
        let gelu = self.epilogue == Epilogue::Gelu;
        match &self.weights {
            Some(w) => vec![DeviceCall::gemm_with_weights(
                contract,
                (g.m, g.k, g.n),
                g.batch,
                w.0.has_bias(),
                gelu,
            )],
            None => {
                let mut calls = vec![DeviceCall {
                    need: KernelNeed::gemm(&layout, false, false),
                    traffic: Traffic::gemm(contract, &layout, false, TileEnd::None)
                        .times(g.batch as u64),
                    upload_bytes: 0,
                }];
                if gelu {
                    calls.extend(DeviceCall::stream(
                        contract,
                        Kernel::Gelu,
                        g.batch * g.m * g.n,
                        1,
                        1,
                    ));
                }
                calls
            }
        }
    }
}

impl EvalOp for DeviceMatMul {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let g = &self.geometry;
        let a = inputs[0].to_plain_array_view::<f32>()?;
        let a = canonical_cow(a, &g.a_perm);
        let out = write_output(g, |c| self.compute(&inputs, &a, c))?;
        Ok(tvec!(out.into_tvalue()))
    }

    op_out_of_plan!();
}

impl TypedOp for DeviceMatMul {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].datum_type == f32::datum_type());
        Ok(tvec!(f32::fact(&self.geometry.out_shape)))
    }

    fn cost(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let g = &self.geometry;
        Ok(tvec!((
            Cost::FMA(f32::datum_type()),
            ((g.batch * g.m * g.k * g.n) as i64).into()
        )))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_core::ndarray::ArrayD;

    /// The fast permuting copy against ndarray's, for permutations of 4-d arrays with a
    /// size-1 axis, small (one thread) and large (split over the pool).
    #[test]
    fn permute_into_is_ndarrays_permutation() {
        // Transposes, the stems' [1, t, channels] -> [1, channels, t] among them, with and
        // without the pool, in whole and partial blocks of rows.
        for shape in [
            [3usize, 1, 4, 5],
            [1, 300, 8, 64],
            [1, 1, 3000, 384],
            [1, 1, 37, 50],
            [2, 1, 1000, 77],
        ] {
            let len = shape.iter().product::<usize>();
            let src: Vec<f32> = (0..len).map(|i| i as f32).collect();
            let a = ArrayD::from_shape_vec(IxDyn(&shape), src.clone()).unwrap();
            let perms = [
                [0, 1, 2, 3],
                [2, 0, 1, 3],
                [3, 2, 1, 0],
                [1, 3, 0, 2],
                [0, 2, 3, 1],
                [0, 2, 1, 3],
                [0, 1, 3, 2],
            ];
            for perm in perms {
                let expected: Vec<f32> = a
                    .clone()
                    .permuted_axes(IxDyn(&perm))
                    .iter()
                    .copied()
                    .collect();
                let mut out = vec![0f32; len];
                permute_into(&src, &shape, &perm, &mut out);
                assert!(out == expected, "{shape:?} {perm:?}");
            }
        }
    }
}
