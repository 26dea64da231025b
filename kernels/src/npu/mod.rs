//! The XDNA device: the kernel contract run through XRT with the kernels of a
//! [`Manifest`].
//!
//! The host flow is AMD's for NPUs (mlir-aie's `programming_examples` host code): open the
//! device, register each xclbin and create a hardware context for it, open its `MLIR_AIE`
//! kernel; per kernel shape, write the instruction stream once into a cacheable buffer in
//! group 1; data buffers are host-only, in the groups of arguments 3, 4, 5 and 6; a dispatch
//! is `kernel(3, instructions, word count, A, B, C[, bias])`, a wait, and a sync of C back.
//! The driver rations hardware contexts (6 on XDNA1), so contexts are created when first
//! used and at most [`ContextLimit`]'s number are held, the least recently used given up
//! ([`crate::contexts`]); buffers live on the device, not in a context, and stay.
//! Attention runs as one call a head whose scores stay in device buffers
//! ([`crate::attention`]); under bf16x3, as two GEMM calls with the host's float32 softmax
//! between them.
//!
//! Weights are converted to bfloat16 (under bf16x3, expanded into their high and low parts,
//! [`crate::gemm::split`]), padded to the contract's tiles and uploaded once when the plan is
//! built; per dispatch only activations move, and the buffers are allocated once
//! per kernel shape and reused. The padding and the cut of M into dispatches are
//! [`GemmContract::layout`]'s, shared with the emulator. A device error or a timeout fails
//! the call with the device's message: nothing computed by a failed dispatch is returned.

mod xrt;

pub use xrt::{BoFlags, CommandState, Native, NativeKernel, Xrt};

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::attention::AttentionLayout;
use crate::bf16;
use crate::contexts::{CONTEXTS_VAR, ContextLimit, Lru};
use crate::cpu_math;
use crate::device::{
    AttentionDims, Counters, Device, DeviceError, Epilogue, Kernel, KernelNeed, StreamLayout,
    Traffic, Weights, checks,
};
use crate::gemm::{GemmContract, GemmLayout, Precision, split};
use crate::hw::DeviceFamily;
use crate::hw::cost::TileEnd;
use crate::manifest::{KernelEntry, KernelKind, Manifest};

/// How long one dispatch may run before it is declared hung.
pub const DISPATCH_TIMEOUT: Duration = Duration::from_secs(10);

/// The instruction buffer is argument 1 of the NPU flow's kernel.
const INSTRUCTION_ARG: u32 = 1;

/// The data-buffer arguments of the NPU flow: A, B, C and the bias are arguments 3 to 6.
const FIRST_DATA_ARG: u32 = 3;

/// One kernel of the manifest, opened: its kernel object and instruction buffer.
struct Loaded<X: Xrt> {
    kernel: X::Kernel,
    instructions: X::Bo,
    words: u32,
}

/// A hardware context held, with the kernels of its xclbin opened in it.
struct ContextEntry<X: Xrt> {
    context: X::Context,
    kernels: HashMap<usize, Arc<Loaded<X>>>,
}

/// Data buffers of one kernel shape, allocated once and reused by every dispatch.
struct Buffers<X: Xrt> {
    a: X::Bo,
    b: Option<X::Bo>,
    c: X::Bo,
    bias: Option<X::Bo>,
}

/// Device buffers of one attention shape, allocated once and reused by every head: Q, K^T
/// and V in, the output out, and the scores and probabilities that never leave the device,
/// with the sub-buffers that one dispatch's rows of them are.
struct AttentionBuffers<X: Xrt> {
    q: X::Bo,
    q_parts: Vec<X::Bo>,
    kt: X::Bo,
    scores: X::Bo,
    scores_parts: Vec<X::Bo>,
    probs: X::Bo,
    probs_parts: Vec<X::Bo>,
    v: X::Bo,
    out: X::Bo,
}

/// The NPU's weights: B (and the bias) in device buffers.
struct NpuWeights<X: Xrt> {
    b: X::Bo,
    bias: Option<X::Bo>,
    k_pad: usize,
    n_pad: usize,
}

/// What one call moved between host and device, counted as the host code syncs it.
#[derive(Default)]
struct Moved {
    dispatches: u64,
    bytes_in: u64,
    bytes_out: u64,
}

/// An XDNA NPU driven through XRT (`--backend npu`); `X` is XRT itself ([`Native`]) except
/// under test.
pub struct Npu<X: Xrt = Native> {
    xrt: X,
    contract: GemmContract,
    manifest: Manifest,
    device: X::Device,
    xclbins: HashMap<PathBuf, X::Xclbin>,
    contexts: Mutex<Lru<PathBuf, ContextEntry<X>>>,
    buffers: Mutex<HashMap<(usize, bool), Buffers<X>>>,
    attention: Mutex<HashMap<[usize; 3], AttentionBuffers<X>>>,
    counters: Counters,
}

impl<X: Xrt> std::fmt::Debug for Npu<X> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Npu")
            .field("device", &self.xrt.device_name(&self.device))
            .field("kernels", &self.manifest.dir)
            .finish_non_exhaustive()
    }
}

/// Reads an instruction file: mlir-aie writes either raw little-endian 32-bit words
/// (`*.bin`) or one hexadecimal word a line (`*.txt`).
pub fn read_instructions(path: &Path) -> Result<Vec<u32>, DeviceError> {
    let bytes = std::fs::read(path).map_err(|e| {
        DeviceError::Unavailable(format!(
            "cannot read the instructions {}: {e}",
            path.display()
        ))
    })?;
    let bad = |what: &str| {
        DeviceError::Unavailable(format!("{}: {what}; rebuild the kernels", path.display()))
    };
    let words: Vec<u32> = if path.extension().is_some_and(|e| e == "txt") {
        let text = std::str::from_utf8(&bytes).map_err(|_| bad("not text"))?;
        text.split_whitespace()
            .map(|w| u32::from_str_radix(w.trim_start_matches("0x"), 16))
            .collect::<Result<_, _>>()
            .map_err(|_| bad("a line is not a hexadecimal word"))?
    } else {
        if !bytes.len().is_multiple_of(4) {
            return Err(bad("its length is not a whole number of 32-bit words"));
        }
        bytes
            .chunks_exact(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect()
    };
    if words.is_empty() {
        return Err(bad("no instructions"));
    }
    Ok(words)
}

fn bf16_bytes(values: impl Iterator<Item = f32>, rounding: bf16::Rounding) -> Vec<u8> {
    values
        .flat_map(|v| bf16::to_bits(v, rounding).to_le_bytes())
        .collect()
}

/// `rows x cols` row-major values padded with zeros to `rows_pad x cols_pad`, as bf16 bytes.
fn padded_bf16(
    x: &[f32],
    (rows, cols): (usize, usize),
    (rows_pad, cols_pad): (usize, usize),
    rounding: bf16::Rounding,
) -> Vec<u8> {
    let values = (0..rows_pad).flat_map(move |r| {
        (0..cols_pad).map(move |c| {
            if r < rows && c < cols {
                x[r * cols + c]
            } else {
                0.0
            }
        })
    });
    bf16_bytes(values, rounding)
}

/// The rows of `out` (`cols` values each) from float32 bytes laid out `cols_pad` values a
/// row: the inverse of the padding of C to tiles.
fn unpadded_f32(bytes: &[u8], cols_pad: usize, out: &mut [f32], cols: usize) {
    for (r, row) in out.chunks_exact_mut(cols).enumerate() {
        let src = &bytes[r * cols_pad * 4..(r * cols_pad + cols) * 4];
        for (v, b) in row.iter_mut().zip(src.chunks_exact(4)) {
            *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
    }
}

impl Npu<Native> {
    /// Opens device `index` through XRT with the kernels of `manifest`. Fails with XRT's
    /// message when no NPU can be opened, or when this XRT cannot drive one.
    pub fn open(
        index: u32,
        manifest: Manifest,
        contract: GemmContract,
    ) -> Result<Npu<Native>, DeviceError> {
        Npu::open_with(Native, index, manifest, contract)
    }
}

impl<X: Xrt> Npu<X> {
    /// Opens device `index` of `xrt` with the kernels of `manifest`.
    pub fn open_with(
        xrt: X,
        index: u32,
        manifest: Manifest,
        contract: GemmContract,
    ) -> Result<Npu<X>, DeviceError> {
        if manifest.rounding.rounding() != contract.rounding {
            return Err(DeviceError::Unavailable(format!(
                "the kernels in {} round to bf16 by {:?}, the contract by {:?}: rebuild them \
                 with the contract's rounding",
                manifest.dir.display(),
                manifest.rounding,
                contract.rounding
            )));
        }
        let family = contract.family();
        if DeviceFamily::from_target(&manifest.target) != Some(family) {
            return Err(DeviceError::Unavailable(format!(
                "the kernels in {} were built for {:?}, not for {} ({}): rebuild them with \
                 kernels/aie/build.sh --target {}",
                manifest.dir.display(),
                manifest.target,
                family.name(),
                family.target(),
                family.target()
            )));
        }
        let device = xrt.open(index)?;
        let name = xrt.device_name(&device);
        let found = DeviceFamily::from_device_name(&name);
        if found != family {
            return Err(DeviceError::Unavailable(format!(
                "NPU {index} ({name}) is {}, the plan was made for {}",
                found.name(),
                family.name()
            )));
        }
        // Every xclbin is read and registered now, so that a bad file fails here; their
        // contexts are created when first used, at most the device's budget at once.
        let mut xclbins = HashMap::new();
        for entry in &manifest.kernels {
            let path = manifest.dir.join(&entry.xclbin);
            if xclbins.contains_key(&path) {
                continue;
            }
            let xclbin = xrt.load_xclbin(&device, &path)?;
            xclbins.insert(path, xclbin);
        }
        let limit = ContextLimit::for_device(&xrt.device_name(&device))
            .with_setting(std::env::var(CONTEXTS_VAR).ok().as_deref())
            .map_err(DeviceError::Unavailable)?;
        Ok(Npu {
            xrt,
            contract,
            manifest,
            device,
            xclbins,
            contexts: Mutex::new(Lru::new(limit)),
            buffers: Mutex::default(),
            attention: Mutex::default(),
            counters: Counters::default(),
        })
    }

    /// The XRT below this device.
    pub fn xrt(&self) -> &X {
        &self.xrt
    }

    /// How many hardware contexts have been created since the device was opened.
    pub fn contexts_created(&self) -> u64 {
        self.contexts.lock().expect("context table").made()
    }

    fn find(&self, need: &KernelNeed) -> Result<usize, DeviceError> {
        self.manifest.position(need).ok_or_else(|| {
            DeviceError::Unavailable(format!(
                "the kernels in {} have no kernel for {need}; build kernels/aie for this \
                 model's shapes",
                self.manifest.dir.display(),
            ))
        })
    }

    /// Kernel `index` of the manifest, opened in its xclbin's hardware context, which is
    /// created if it is not held (giving up others as [`ContextLimit`] says). Callers hold
    /// the result only for the dispatches at hand: a held kernel keeps its context alive.
    fn load(&self, index: usize) -> Result<Arc<Loaded<X>>, DeviceError> {
        let entry: &KernelEntry = &self.manifest.kernels[index];
        let path = self.manifest.dir.join(&entry.xclbin);
        let mut contexts = self.contexts.lock().expect("context table");
        if contexts.get(&path).is_none() {
            drop(contexts.make_room());
            let xclbin = &self.xclbins[&path];
            let context = loop {
                match self.xrt.create_context(&self.device, xclbin) {
                    Ok(context) => break context,
                    // The device's budget is shared with other processes: give up one more
                    // of ours and try again, until none is left.
                    Err(_) if !contexts.is_empty() => drop(contexts.evict_oldest()),
                    Err(e) => {
                        return Err(DeviceError::Run(format!(
                            "{e}; the NPU has no hardware context left for {} (other \
                             processes may hold them; {CONTEXTS_VAR} sets how many this one \
                             holds)",
                            path.display()
                        )));
                    }
                }
            };
            contexts.insert(
                path.clone(),
                ContextEntry {
                    context,
                    kernels: HashMap::new(),
                },
            );
        }
        let held = contexts.get(&path).expect("the context just made");
        if let Some(l) = held.kernels.get(&index) {
            return Ok(l.clone());
        }
        let kernel = self.xrt.open_kernel(&held.context, &entry.kernel_name)?;
        let words = read_instructions(&self.manifest.dir.join(&entry.instructions))?;
        let mut instructions = self.xrt.alloc(
            &self.device,
            &kernel,
            INSTRUCTION_ARG,
            words.len() * 4,
            BoFlags::CACHEABLE,
        )?;
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        self.xrt.write(&mut instructions, &bytes, 0)?;
        self.xrt.sync_to_device(&instructions)?;
        let l = Arc::new(Loaded {
            kernel,
            instructions,
            words: words.len() as u32,
        });
        held.kernels.insert(index, l.clone());
        Ok(l)
    }

    fn data_bo(&self, kernel: &X::Kernel, arg: u32, bytes: usize) -> Result<X::Bo, DeviceError> {
        self.xrt.alloc(
            &self.device,
            kernel,
            FIRST_DATA_ARG + arg,
            bytes,
            BoFlags::HOST_ONLY,
        )
    }

    /// Writes `bytes` into `bo` and syncs them to the device, counting them.
    fn send(&self, bo: &mut X::Bo, bytes: &[u8], moved: &mut Moved) -> Result<(), DeviceError> {
        self.xrt.write(bo, bytes, 0)?;
        self.xrt.sync_to_device(bo)?;
        moved.bytes_in += bytes.len() as u64;
        Ok(())
    }

    /// Syncs `bo` from the device and reads all of it into `out`, counting it.
    fn receive(
        &self,
        bo: &mut X::Bo,
        out: &mut [u8],
        moved: &mut Moved,
    ) -> Result<(), DeviceError> {
        self.xrt.sync_from_device(bo)?;
        self.xrt.read(bo, out, 0)?;
        moved.bytes_out += out.len() as u64;
        Ok(())
    }

    /// Runs one dispatch of `loaded` on `data` and waits for it.
    fn dispatch(
        &self,
        loaded: &Loaded<X>,
        data: &[&X::Bo],
        moved: &mut Moved,
    ) -> Result<(), DeviceError> {
        let state = self.xrt.run(
            &loaded.kernel,
            &loaded.instructions,
            loaded.words,
            data,
            DISPATCH_TIMEOUT,
        )?;
        moved.dispatches += 1;
        match state {
            CommandState::Completed => Ok(()),
            state if !state.is_finished() => Err(DeviceError::Run(format!(
                "a dispatch did not finish within {} s (state {state:?})",
                DISPATCH_TIMEOUT.as_secs()
            ))),
            state => Err(DeviceError::Run(format!(
                "a dispatch ended in state {state:?}"
            ))),
        }
    }

    /// Records one call of `kernel` that moved `moved`, with the work of `flops` and the
    /// array-side traffic of `model` (which the host does not see).
    fn record(&self, kernel: Kernel, moved: Moved, model: Traffic) {
        self.counters.record(
            kernel,
            Traffic {
                calls: 1,
                dispatches: moved.dispatches,
                bytes_in: moved.bytes_in,
                bytes_out: moved.bytes_out,
                ..model
            },
        );
    }

    /// The A operand of `layout` as the device multiplies it, with the layout whose `k` is
    /// its row length: `a` itself, or under bf16x3 its expansion ([`split::expand_a`]: the
    /// plain contract's GEMM over the expanded operands is bf16x3's product).
    fn device_a<'a>(
        &self,
        a: &'a [f32],
        layout: &GemmLayout,
    ) -> (std::borrow::Cow<'a, [f32]>, GemmLayout) {
        match self.contract.precision {
            Precision::Bf16 | Precision::Bf16Host => (a.into(), *layout),
            Precision::Bf16x3 => {
                let a = split::expand_a(&self.contract, a, layout.m, layout.k);
                let k = split::expanded_k(&self.contract, layout.k);
                (a.into(), GemmLayout { k, ..*layout })
            }
        }
    }

    /// B `[k, n]` as the device multiplies it: itself, or expanded under bf16x3
    /// ([`split::expand_b`]), its rows as many as [`Npu::device_a`]'s layout's `k`.
    fn device_b<'a>(&self, b: &'a [f32], k: usize, n: usize) -> std::borrow::Cow<'a, [f32]> {
        match self.contract.precision {
            Precision::Bf16 | Precision::Bf16Host => b.into(),
            Precision::Bf16x3 => split::expand_b(&self.contract, b, k, n).into(),
        }
    }

    /// The GEMM of `layout`: A from `a` (bf16, padded), B and bias from the weights or from
    /// the activation `b`, C into `c`. Under bf16x3, `a`, `b` and `layout.k` are the
    /// expanded ones ([`Npu::device_a`]).
    fn gemm(
        &self,
        a: &[f32],
        layout: &GemmLayout,
        weights: Option<&NpuWeights<X>>,
        b: Option<&[f32]>,
        epilogue: Epilogue,
        c: &mut [f32],
    ) -> Result<Moved, DeviceError> {
        let mut moved = Moved::default();
        let has_bias = weights.is_some_and(|w| w.bias.is_some());
        let gelu = epilogue == Epilogue::Gelu;
        let index = self.find(&KernelNeed::gemm(layout, has_bias, gelu))?;
        let loaded = self.load(index)?;
        let rounding = self.contract.rounding;
        let mut buffers = self.buffers.lock().expect("buffer table");
        let key = (index, weights.is_none());
        let bufs = match buffers.entry(key) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert({
                let b_bo = if weights.is_none() {
                    Some(self.data_bo(&loaded.kernel, 1, layout.k_pad * layout.n_pad * 2)?)
                } else {
                    None
                };
                let bias_bo = if gelu && !has_bias {
                    // A GELU epilogue without a bias adds zeros.
                    let mut bo = self.data_bo(&loaded.kernel, 3, layout.n_pad * 4)?;
                    self.xrt.write(&mut bo, &vec![0u8; layout.n_pad * 4], 0)?;
                    self.xrt.sync_to_device(&bo)?;
                    Some(bo)
                } else {
                    None
                };
                let a_bo = self.data_bo(&loaded.kernel, 0, layout.m_chunk * layout.k_pad * 2)?;
                let c_bo = self.data_bo(&loaded.kernel, 2, layout.m_chunk * layout.n_pad * 4)?;
                Buffers {
                    a: a_bo,
                    b: b_bo,
                    c: c_bo,
                    bias: bias_bo,
                }
            }),
        };
        if let (Some(b), Some(bo)) = (b, bufs.b.as_mut()) {
            let bytes = padded_bf16(
                b,
                (layout.k, layout.n),
                (layout.k_pad, layout.n_pad),
                rounding,
            );
            self.send(bo, &bytes, &mut moved)?;
        }
        let (m, k, n) = (layout.m, layout.k, layout.n);
        let mut out = vec![0u8; layout.m_chunk * layout.n_pad * 4];
        for d in 0..layout.dispatches {
            let row0 = d * layout.m_chunk;
            let rows = layout.m_chunk.min(m.saturating_sub(row0));
            let a_rows = &a[row0 * k..(row0 + rows) * k];
            let bytes = padded_bf16(a_rows, (rows, k), (layout.m_chunk, layout.k_pad), rounding);
            self.send(&mut bufs.a, &bytes, &mut moved)?;
            let b_bo = match weights {
                Some(w) => &w.b,
                None => bufs.b.as_ref().expect("activation B buffer"),
            };
            let bias_bo = weights.and_then(|w| w.bias.as_ref()).or(bufs.bias.as_ref());
            let mut data = vec![&bufs.a, b_bo, &bufs.c];
            data.extend(bias_bo);
            self.dispatch(&loaded, &data, &mut moved)?;
            self.receive(&mut bufs.c, &mut out, &mut moved)?;
            unpadded_f32(&out, layout.n_pad, &mut c[row0 * n..(row0 + rows) * n], n);
        }
        Ok(moved)
    }

    /// The buffers of attention `layout` run by the kernels `indices` (its three calls).
    ///
    /// Every buffer is a host-only buffer in the memory group of the argument that first
    /// uses it; the probabilities, written by the softmax's output argument, are read by the
    /// second product's A argument. On XDNA every data argument has the same group (host
    /// memory), which is what lets one buffer serve two kernels of two hardware contexts.
    /// The probabilities are written with zeros once, here: the softmax never writes their
    /// padding (rows past `m`, columns past `n`), which the second product reads as zeros.
    /// The first product writes every value of the scores, its padding as zeros.
    fn attention_buffers(
        &self,
        layout: &AttentionLayout,
        indices: [usize; 3],
    ) -> Result<AttentionBuffers<X>, DeviceError> {
        let (qk, pv, width) = (&layout.qk, &layout.pv, layout.width);
        // Enough rows for every dispatch of either product (the last one may run past m_pad).
        let rows = layout.rows();
        let parts = |bo: &X::Bo, chunk_bytes: usize, count: usize| {
            (0..count)
                .map(|d| self.xrt.sub(bo, d * chunk_bytes, chunk_bytes))
                .collect::<Result<Vec<_>, _>>()
        };
        let kernel = self.load(indices[0])?;
        let q = self.data_bo(&kernel.kernel, 0, qk.rows_sent() * qk.k_pad * 2)?;
        let kt = self.data_bo(&kernel.kernel, 1, qk.k_pad * width * 2)?;
        let scores = self.data_bo(&kernel.kernel, 2, rows * width * 2)?;
        drop(kernel);
        let kernel = self.load(indices[1])?;
        let mut probs = self.data_bo(&kernel.kernel, 1, rows * width * 2)?;
        drop(kernel);
        self.xrt
            .write(&mut probs, &vec![0u8; rows * width * 2], 0)?;
        self.xrt.sync_to_device(&probs)?;
        let kernel = self.load(indices[2])?;
        let v = self.data_bo(&kernel.kernel, 1, width * pv.n_pad * 2)?;
        let out = self.data_bo(&kernel.kernel, 2, pv.m_chunk * pv.n_pad * 4)?;
        drop(kernel);
        Ok(AttentionBuffers {
            q_parts: parts(&q, qk.m_chunk * qk.k_pad * 2, qk.dispatches)?,
            q,
            kt,
            scores_parts: parts(&scores, qk.m_chunk * width * 2, qk.dispatches)?,
            scores,
            probs_parts: parts(&probs, pv.m_chunk * width * 2, pv.dispatches)?,
            probs,
            v,
            out,
        })
    }

    /// A row-wise or elementwise kernel over `x` in place, `rows_per_dispatch` rows of `cols`.
    fn stream(&self, kind: Kernel, x: &mut [f32], cols: usize) -> Result<(), DeviceError> {
        if x.is_empty() {
            return Ok(());
        }
        let mut moved = Moved::default();
        let rows = x.len() / cols;
        let layout = StreamLayout::new(&self.contract, rows, cols);
        let per = layout.rows_per_dispatch;
        let index = self.find(&KernelNeed::stream(kind, &layout))?;
        let loaded = self.load(index)?;
        let mut buffers = self.buffers.lock().expect("buffer table");
        let key = (index, true);
        let bufs = match buffers.entry(key) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(Buffers {
                a: self.data_bo(&loaded.kernel, 0, per * cols * 2)?,
                b: None,
                c: self.data_bo(&loaded.kernel, 1, per * cols * 2)?,
                bias: None,
            }),
        };
        let mut out = vec![0u8; per * cols * 2];
        for chunk in x.chunks_mut(per * cols) {
            let mut bytes = bf16_bytes(chunk.iter().copied(), self.contract.rounding);
            bytes.resize(per * cols * 2, 0);
            self.send(&mut bufs.a, &bytes, &mut moved)?;
            self.dispatch(&loaded, &[&bufs.a, &bufs.c], &mut moved)?;
            self.receive(&mut bufs.c, &mut out, &mut moved)?;
            for (v, h) in chunk.iter_mut().zip(out.chunks_exact(2)) {
                *v = bf16::from_bits(u16::from_le_bytes([h[0], h[1]]));
            }
        }
        self.record(kind, moved, Traffic::stream(&self.contract, kind, &layout));
        Ok(())
    }
}

impl<X: Xrt> Device for Npu<X> {
    fn prefix(&self) -> &'static str {
        "Npu"
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
        let layout = self.contract.layout(1, k, n);
        // Any GEMM kernel of this K and N gives the memory groups of B and the bias.
        let index = self
            .manifest
            .kernels
            .iter()
            .position(|e| {
                e.kind == KernelKind::Gemm
                    && e.shape[1] == layout.k_pad
                    && e.shape[2] == layout.n_pad
            })
            .ok_or_else(|| {
                DeviceError::Unavailable(format!(
                    "the kernels in {} have no GEMM for K = {} and N = {}; build kernels/aie for \
                     this model's shapes",
                    self.manifest.dir.display(),
                    layout.k_pad,
                    layout.n_pad
                ))
            })?;
        let loaded = self.load(index)?;
        let mut b_bo = self.data_bo(&loaded.kernel, 1, layout.weight_bytes())?;
        let b_rows = match self.contract.precision {
            Precision::Bf16 | Precision::Bf16Host => k,
            Precision::Bf16x3 => split::expanded_k(&self.contract, k),
        };
        let b_bytes = padded_bf16(
            &self.device_b(b, k, n),
            (b_rows, n),
            (layout.k_pad, layout.n_pad),
            self.contract.rounding,
        );
        self.xrt.write(&mut b_bo, &b_bytes, 0)?;
        self.xrt.sync_to_device(&b_bo)?;
        let bias_bo = match bias {
            Some(bias) => {
                let mut bytes: Vec<u8> = bias.iter().flat_map(|v| v.to_le_bytes()).collect();
                bytes.resize(layout.n_pad * 4, 0);
                let mut bo = self.data_bo(&loaded.kernel, 3, bytes.len())?;
                self.xrt.write(&mut bo, &bytes, 0)?;
                self.xrt.sync_to_device(&bo)?;
                Some(bo)
            }
            None => None,
        };
        self.counters
            .record_weights(layout.weight_bytes() + bias.map_or(0, |_| layout.bias_bytes()));
        Ok(Arc::new(Weights::new(
            k,
            n,
            bias.is_some(),
            Box::new(NpuWeights::<X> {
                b: b_bo,
                bias: bias_bo,
                k_pad: layout.k_pad,
                n_pad: layout.n_pad,
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
        let nw = checks::own::<NpuWeights<X>>(w)?;
        checks::matmul(a, m, w, c)?;
        let layout = self.contract.layout(m, w.k(), w.n());
        debug_assert_eq!((layout.k_pad, layout.n_pad), (nw.k_pad, nw.n_pad));
        let (a, device_layout) = self.device_a(a, &layout);
        let moved = if self.contract.softmax_gelu_on_device() {
            self.gemm(&a, &device_layout, Some(nw), None, epilogue, c)?
        } else {
            // bf16x3: the bias on the device, the float32 GELU here.
            let moved = self.gemm(&a, &device_layout, Some(nw), None, Epilogue::None, c)?;
            if epilogue == Epilogue::Gelu {
                cpu_math::gelu_par(c);
            }
            moved
        };
        let gelu = epilogue == Epilogue::Gelu;
        let end =
            KernelNeed::weights_gemm(&self.contract, &layout, nw.bias.is_some(), gelu).tile_end();
        self.record(
            Kernel::MatMul,
            moved,
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
        let layout = self.contract.layout(m, k, n);
        let (a, device_layout) = self.device_a(a, &layout);
        let b = self.device_b(b, k, n);
        let moved = self.gemm(&a, &device_layout, None, Some(&b), Epilogue::None, c)?;
        self.record(
            Kernel::MatMul,
            moved,
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
        checks::attention(q, kt, v, dims, out)?;
        if !self.contract.softmax_gelu_on_device() {
            // bf16x3: two products of activations, the float32 softmax here between them
            // (AttentionLayout::calls says the same).
            let mut scores = vec![0f32; dims.m * dims.n];
            self.matmul_act(q, kt, (dims.m, dims.d, dims.n), &mut scores)?;
            cpu_math::softmax_rows_par(&mut scores, dims.n);
            return self.matmul_act(&scores, v, (dims.m, dims.n, dims.dv), out);
        }
        let layout = self.contract.attention(dims);
        let calls = layout.calls(&self.contract);
        let indices = [
            self.find(&calls[0].0)?,
            self.find(&calls[1].0)?,
            self.find(&calls[2].0)?,
        ];
        let rounding = self.contract.rounding;
        let mut table = self.attention.lock().expect("attention buffer table");
        let bufs = match table.entry(indices) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(self.attention_buffers(&layout, indices)?),
        };
        let (qk, pv, width) = (&layout.qk, &layout.pv, layout.width);
        let AttentionDims { m, d, n, dv } = dims;
        let mut moved = [Moved::default(), Moved::default(), Moved::default()];
        // In: Q, K^T (the first product's) and V (the second's), in bfloat16, padded.
        let q_bytes = padded_bf16(q, (m, d), (qk.rows_sent(), qk.k_pad), rounding);
        self.send(&mut bufs.q, &q_bytes, &mut moved[0])?;
        let kt_bytes = padded_bf16(kt, (d, n), (qk.k_pad, width), rounding);
        self.send(&mut bufs.kt, &kt_bytes, &mut moved[0])?;
        let v_bytes = padded_bf16(v, (n, dv), (width, pv.n_pad), rounding);
        self.send(&mut bufs.v, &v_bytes, &mut moved[2])?;
        // S = Q K^T into the scores, then P = softmax(S) into the probabilities: no sync,
        // nothing read back.
        // Each kernel is held only while it runs (see `load`).
        let kernel = self.load(indices[0])?;
        for (q_part, s_part) in bufs.q_parts.iter().zip(&bufs.scores_parts) {
            self.dispatch(&kernel, &[q_part, &bufs.kt, s_part], &mut moved[0])?;
        }
        drop(kernel);
        self.dispatch(
            &*self.load(indices[1])?,
            &[&bufs.scores, &bufs.probs],
            &mut moved[1],
        )?;
        // O = P V, read back dispatch by dispatch.
        let kernel = self.load(indices[2])?;
        let mut bytes = vec![0u8; pv.m_chunk * pv.n_pad * 4];
        for (i, p_part) in bufs.probs_parts.iter().enumerate() {
            self.dispatch(&kernel, &[p_part, &bufs.v, &bufs.out], &mut moved[2])?;
            self.receive(&mut bufs.out, &mut bytes, &mut moved[2])?;
            let row0 = i * pv.m_chunk;
            let rows = pv.m_chunk.min(m.saturating_sub(row0));
            unpadded_f32(
                &bytes,
                pv.n_pad,
                &mut out[row0 * dv..(row0 + rows) * dv],
                dv,
            );
        }
        for ((need, traffic), moved) in calls.into_iter().zip(moved) {
            self.record(need.kernel, moved, traffic);
        }
        Ok(())
    }

    fn softmax(&self, x: &mut [f32], cols: usize) -> Result<(), DeviceError> {
        checks::softmax(x, cols)?;
        if !self.contract.softmax_gelu_on_device() {
            cpu_math::softmax_rows_par(x, cols);
            return Ok(());
        }
        self.stream(Kernel::Softmax, x, cols)
    }

    fn gelu(&self, x: &mut [f32]) -> Result<(), DeviceError> {
        if !self.contract.softmax_gelu_on_device() {
            cpu_math::gelu_par(x);
            return Ok(());
        }
        self.stream(Kernel::Gelu, x, 1)
    }

    fn counters(&self) -> &Counters {
        &self.counters
    }

    fn check_plan(&self, needs: &[KernelNeed]) -> Result<(), DeviceError> {
        let missing: Vec<String> = needs
            .iter()
            .filter(|need| self.manifest.position(need).is_none())
            .map(KernelNeed::to_string)
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let precision = match self.contract.precision {
            Precision::Bf16 => "",
            Precision::Bf16x3 => {
                " (bf16x3's shapes come with kernels/aie/build.sh --precision all, the \
                 default, or --precision bf16x3)"
            }
            Precision::Bf16Host => {
                " (bf16-host's shapes come with kernels/aie/build.sh --precision all, the \
                 default, or --precision bf16-host)"
            }
        };
        Err(DeviceError::Unavailable(format!(
            "the kernels in {} lack {} this model needs ({}); build kernels/aie for this \
             model{precision}",
            self.manifest.dir.display(),
            missing.len(),
            missing.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instruction_files_in_both_formats() {
        let dir = std::env::temp_dir().join(format!("amanuensis-insts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let words = [0x0600_0100u32, 0x0000_0000, 0xdead_beef];
        let bin: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        std::fs::write(dir.join("a.bin"), &bin).unwrap();
        std::fs::write(dir.join("a.txt"), "06000100\n00000000\ndeadbeef\n").unwrap();
        assert_eq!(read_instructions(&dir.join("a.bin")).unwrap(), words);
        assert_eq!(read_instructions(&dir.join("a.txt")).unwrap(), words);
        std::fs::write(dir.join("b.bin"), [1u8, 2, 3]).unwrap();
        let err = read_instructions(&dir.join("b.bin"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("32-bit words"), "{err}");
        std::fs::write(dir.join("b.txt"), "zz\n").unwrap();
        assert!(read_instructions(&dir.join("b.txt")).is_err());
        assert!(read_instructions(&dir.join("missing.bin")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn padding_to_tiles_keeps_values_and_adds_zeros() {
        let x = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let bytes = padded_bf16(&x, (2, 3), (3, 4), bf16::Rounding::NearestEven);
        let back: Vec<f32> = bytes
            .chunks_exact(2)
            .map(|h| bf16::from_bits(u16::from_le_bytes([h[0], h[1]])))
            .collect();
        assert_eq!(
            back,
            [1.0, 2.0, 3.0, 0.0, 4.0, 5.0, 6.0, 0.0, 0.0, 0.0, 0.0, 0.0]
        );
    }

    #[test]
    fn unpadding_keeps_the_leading_columns_of_each_row() {
        let padded: Vec<u8> = [1.0f32, 2.0, 9.0, 3.0, 4.0, 9.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let mut out = [0.0f32; 4];
        unpadded_f32(&padded, 3, &mut out, 2);
        assert_eq!(out, [1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn opening_without_a_device_says_why() {
        let manifest = Manifest {
            format: crate::manifest::FORMAT,
            target: "npu1_4col".into(),
            rounding: Default::default(),
            kernels: vec![],
            dir: PathBuf::from("."),
        };
        let err = Npu::open(0, manifest, GemmContract::XDNA1).unwrap_err();
        assert!(matches!(err, DeviceError::Unavailable(_)), "{err:?}");
        eprintln!("no NPU here: {err}");
    }
}
