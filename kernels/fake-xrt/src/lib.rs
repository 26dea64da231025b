#![warn(missing_docs)]
//! A fake XRT under the real NPU host code ([`amanuensis_kernels::npu::Npu`]), for tests.
//!
//! [`FakeXrt`] implements [`Xrt`] with buffers in memory and kernels that run the kernel
//! contract through the emulator's functions on the bytes of the buffers they are given,
//! reading their arguments as an AIE design does:
//!
//! - every buffer has a host copy and a device copy: `write`/`read` touch the host copy,
//!   `sync_to_device`/`sync_from_device` copy between them, a kernel reads and writes the
//!   device copy only. A missing sync is stale data, not a silent success. New buffers hold
//!   `0xff` bytes (bfloat16 and float32 NaNs), so nothing may count on zeros it did not write;
//! - a sub-buffer shares its parent's memory at its offset;
//! - the xclbin says which kernel kind it holds ([`XclbinDesc`]); the instruction stream
//!   (read from the device copy of the instruction buffer, the word count as passed) says the
//!   dispatch's shape, as the runtime sequence of an mlir-aie design does;
//! - the data buffers are taken in the design's order (GEMM: A, B, C, then the bias for the
//!   `bias` epilogues; softmax and GELU: input, output), each checked to be large enough for
//!   the padded layout the shape implies, in the memory group and with the flags the NPU flow
//!   requires;
//! - hardware contexts are rationed as the amdxdna driver does ([`FakeConfig::budget`]),
//!   other processes' contexts counted with [`FakeConfig::held_elsewhere`];
//! - [`Faults`] makes a chosen dispatch hang or end in an error state.
//!
//! It measures what crosses between host and device ([`Measured`]): the bytes synced each
//! way, attributed to the kernel kind that consumed or produced them, and the dispatches.
//! [`Sabotaged`] wraps any [`Xrt`] to break one thing on purpose, which a test must notice.
//!
//! [`write_kernels`] writes a kernel directory (manifest, fake xclbins, instruction streams)
//! for a list of [`KernelNeed`]s, in the manifest format the real build writes.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use amanuensis_kernels::bf16::{self, Rounding};
use amanuensis_kernels::device::{DeviceError, Kernel, KernelNeed};
use amanuensis_kernels::gemm::{self, GemmContract};
use amanuensis_kernels::hw::DeviceFamily;
use amanuensis_kernels::manifest::{FORMAT, Manifest};
use amanuensis_kernels::npu::{BoFlags, CommandState, Xrt};
use amanuensis_kernels::packed_gemm::{self, PackedB};
use amanuensis_kernels::{gelu, softmax};
use sha2::{Digest, Sha256};

/// The first word of a fake instruction stream.
pub const MAGIC: u32 = 0x4e50_5531;

/// The memory group of the instruction buffer (kernel argument 1).
const INSTRUCTION_GROUP: u32 = 1;
/// The memory group of every data argument (3 to 6): host memory, as on XDNA.
const DATA_GROUP: u32 = 0;

/// What a fake xclbin holds: the kernel it implements (the real one holds the AIE design).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct XclbinDesc {
    /// The kernel's name (`MLIR_AIE`).
    pub kernel_name: String,
    /// `gemm`, `softmax` or `gelu`.
    pub kind: String,
    /// GEMM: `none`, `bias` or `bias_gelu`.
    pub epilogue: String,
    /// GEMM: `f32` or `bf16`.
    pub output: String,
    /// `nearest_even` or `truncate`.
    pub rounding: String,
}

impl XclbinDesc {
    fn kernel(&self) -> Kernel {
        match self.kind.as_str() {
            "gemm" => Kernel::MatMul,
            "softmax" => Kernel::Softmax,
            _ => Kernel::Gelu,
        }
    }

    fn rounding(&self) -> Rounding {
        if self.rounding == "truncate" {
            Rounding::Truncate
        } else {
            Rounding::NearestEven
        }
    }

    fn has_bias(&self) -> bool {
        self.epilogue != "none"
    }
}

/// The instruction stream of a dispatch of `need`'s shape: [`MAGIC`], the word count, the
/// kernel kind, the shape's rank and values, then words standing for the DMA programme.
pub fn instruction_stream(need: &KernelNeed) -> Vec<u32> {
    let mut words = vec![
        MAGIC,
        0,
        need.kernel.index() as u32,
        need.shape.len() as u32,
    ];
    words.extend(need.shape.iter().map(|&d| d as u32));
    words.extend((0..12u32).map(|i| 0x0600_0000 | i));
    words[1] = words.len() as u32;
    words
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// How [`write_kernels_as`] lays the kernels out in xclbins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Xclbins {
    /// One xclbin per kernel (dispatch shape), as `kernels/aie/build.sh` builds them today.
    PerShape,
    /// One xclbin per kernel kind (GEMM epilogue and output, softmax, GELU), shared by every
    /// shape of that kind: the instruction streams carry the shapes.
    PerKind,
}

/// [`write_kernels_as`] with one xclbin per kernel, for XDNA1.
pub fn write_kernels(dir: &Path, rounding: Rounding, needs: &[KernelNeed]) -> Manifest {
    write_kernels_as(dir, rounding, needs, Xclbins::PerShape, DeviceFamily::Xdna1)
}

/// Writes into `dir` a kernel directory for `needs` under `rounding`: fake xclbins laid out
/// as `xclbins` says, one instruction file a kernel, and `manifest.toml` in the real format;
/// returns the manifest as read back.
pub fn write_kernels_as(
    dir: &Path,
    rounding: Rounding,
    needs: &[KernelNeed],
    xclbins: Xclbins,
    family: DeviceFamily,
) -> Manifest {
    std::fs::create_dir_all(dir).expect("kernel directory");
    let rounding_name = match rounding {
        Rounding::NearestEven => "nearest_even",
        Rounding::Truncate => "truncate",
    };
    let mut toml_text = format!(
        "format = {FORMAT}\ntarget = \"{}\"\nrounding = \"{rounding_name}\"\n",
        family.target()
    );
    for (i, need) in needs.iter().enumerate() {
        let kind = match need.kernel {
            Kernel::MatMul => "gemm",
            Kernel::Softmax => "softmax",
            Kernel::Gelu => "gelu",
        };
        let epilogue = match (need.bias, need.gelu) {
            (_, true) => "bias_gelu",
            (true, false) => "bias",
            _ => "none",
        };
        let output = if need.bf16_out { "bf16" } else { "f32" };
        let desc = XclbinDesc {
            kernel_name: "MLIR_AIE".into(),
            kind: kind.into(),
            epilogue: epilogue.into(),
            output: output.into(),
            rounding: rounding_name.into(),
        };
        let xclbin = toml::to_string(&desc).expect("xclbin description");
        let insts: Vec<u8> = instruction_stream(need)
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect();
        let x_name = match xclbins {
            Xclbins::PerShape => format!("k{i}.xclbin"),
            Xclbins::PerKind => format!("{kind}_{epilogue}_{output}.xclbin"),
        };
        let i_name = format!("k{i}.insts.bin");
        std::fs::write(dir.join(&x_name), &xclbin).expect("xclbin");
        std::fs::write(dir.join(&i_name), &insts).expect("instructions");
        let shape = need
            .shape
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        toml_text += &format!(
            "\n[[kernel]]\nkind = \"{kind}\"\nepilogue = \"{epilogue}\"\noutput = \"{output}\"\n\
             xclbin = \"{x_name}\"\nkernel_name = \"MLIR_AIE\"\ninstructions = \"{i_name}\"\n\
             shape = [{shape}]\n{}sha256 = {{ xclbin = \"{}\", instructions = \"{}\" }}\n",
            if kind == "gemm" {
                "tile = [64, 64, 32]\n"
            } else {
                ""
            },
            sha256(xclbin.as_bytes()),
            sha256(&insts)
        );
    }
    let path = dir.join("manifest.toml");
    std::fs::write(&path, toml_text).expect("manifest");
    Manifest::read(&path).expect("the manifest just written")
}

/// Dispatches to spoil on purpose, counted from 1 over the device's life.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// This dispatch never finishes: `wait` returns with the command still running.
    pub hang_at: Option<u64>,
    /// This dispatch ends in [`CommandState::Error`].
    pub error_at: Option<u64>,
}

/// The fake device.
#[derive(Debug, Clone)]
pub struct FakeConfig {
    /// The name XRT reports (`RyzenAI-npu1` is XDNA1, `NPU Strix` XDNA2).
    pub name: String,
    /// The driver's hardware contexts per device (6 on XDNA1, 16 on XDNA2).
    pub budget: usize,
    /// Contexts other processes hold.
    pub held_elsewhere: usize,
    /// The array's contract: the GEMM's k-tile.
    pub contract: GemmContract,
    /// Dispatches to spoil.
    pub faults: Faults,
}

impl FakeConfig {
    /// An XDNA1 device (Phoenix): `RyzenAI-npu1`, 6 contexts.
    pub fn xdna1() -> FakeConfig {
        FakeConfig {
            name: "RyzenAI-npu1".into(),
            budget: 6,
            held_elsewhere: 0,
            contract: GemmContract::XDNA1,
            faults: Faults::default(),
        }
    }

    /// An XDNA2 device (Strix Point): `NPU Strix`, 16 contexts.
    pub fn xdna2() -> FakeConfig {
        FakeConfig {
            name: "NPU Strix".into(),
            budget: 16,
            contract: GemmContract::XDNA2,
            ..FakeConfig::xdna1()
        }
    }

    /// The family the device's name says.
    pub fn family(&self) -> DeviceFamily {
        DeviceFamily::from_device_name(&self.name)
    }
}

/// What one kernel kind moved, as measured on the bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KindTraffic {
    /// Dispatches run.
    pub dispatches: u64,
    /// Bytes synced to the device that a dispatch of this kind read (each byte once).
    pub bytes_in: u64,
    /// Bytes synced from the device that a dispatch of this kind wrote.
    pub bytes_out: u64,
    /// GEMM: bytes the design's shim DMAs move between memory and the array, walked task by
    /// task as `kernels/aie/gemm/gemm.py`'s runtime sequence issues them ([`gemm_array_bytes`]).
    pub array_bytes: u64,
}

/// What crossed between host and device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Measured {
    /// Per kernel kind, indexed by [`Kernel::index`].
    pub kinds: [KindTraffic; 3],
    /// Every byte of data buffers synced to the device.
    pub synced_in: u64,
    /// Every byte synced from the device.
    pub synced_out: u64,
    /// Bytes of instruction streams synced to the device.
    pub instruction_bytes: u64,
}

impl Measured {
    /// `self - earlier`, kind by kind.
    pub fn since(&self, earlier: &Measured) -> Measured {
        let mut out = *self;
        for (o, e) in out.kinds.iter_mut().zip(&earlier.kinds) {
            o.dispatches -= e.dispatches;
            o.bytes_in -= e.bytes_in;
            o.bytes_out -= e.bytes_out;
            o.array_bytes -= e.array_bytes;
        }
        out.synced_in -= earlier.synced_in;
        out.synced_out -= earlier.synced_out;
        out.instruction_bytes -= earlier.instruction_bytes;
        out
    }

    /// The traffic of `kernel`.
    pub fn get(&self, kernel: Kernel) -> &KindTraffic {
        &self.kinds[kernel.index()]
    }
}

#[derive(Debug, Default)]
struct State {
    measured: Measured,
    live_contexts: usize,
    max_live_contexts: usize,
    contexts_created: u64,
    dispatches: u64,
}

#[derive(Debug)]
struct Shared {
    config: FakeConfig,
    state: Mutex<State>,
}

/// The fake XRT. Clones share one device.
#[derive(Debug, Clone)]
pub struct FakeXrt(Arc<Shared>);

impl FakeXrt {
    /// A fake device as `config` describes it.
    pub fn new(config: FakeConfig) -> FakeXrt {
        FakeXrt(Arc::new(Shared {
            config,
            state: Mutex::default(),
        }))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.state.lock().expect("fake device state")
    }

    /// What has crossed so far.
    pub fn measured(&self) -> Measured {
        self.state().measured
    }

    /// Hardware contexts created so far.
    pub fn contexts_created(&self) -> u64 {
        self.state().contexts_created
    }

    /// Hardware contexts alive now.
    pub fn live_contexts(&self) -> usize {
        self.state().live_contexts
    }

    /// The most hardware contexts alive at once.
    pub fn max_live_contexts(&self) -> usize {
        self.state().max_live_contexts
    }
}

fn fail(what: impl Into<String>) -> DeviceError {
    DeviceError::Run(format!("fake XRT: {}", what.into()))
}

/// The fake's device handle.
#[derive(Debug)]
pub struct FakeDevice {
    index: u32,
}

/// A registered fake xclbin.
#[derive(Debug)]
pub struct FakeXclbin {
    desc: Arc<XclbinDesc>,
}

/// A live hardware context; dropping the last reference gives it back to the driver.
#[derive(Debug)]
pub struct FakeContext {
    desc: Arc<XclbinDesc>,
    token: Arc<ContextToken>,
}

#[derive(Debug)]
struct ContextToken {
    shared: Arc<Shared>,
}

impl Drop for ContextToken {
    fn drop(&mut self) {
        if let Ok(mut s) = self.shared.state.lock() {
            s.live_contexts -= 1;
        }
    }
}

/// A kernel of a context (holding the context alive).
#[derive(Debug)]
pub struct FakeKernel {
    desc: Arc<XclbinDesc>,
    _context: Arc<ContextToken>,
}

#[derive(Debug)]
struct Mem {
    host: Vec<u8>,
    device: Vec<u8>,
    /// Bytes synced to the device and not yet read by a dispatch.
    pending_in: u64,
    /// The kind of the last dispatch that wrote here.
    written_by: Option<Kernel>,
    id: u64,
}

static NEXT_MEM: AtomicU64 = AtomicU64::new(1);

/// A buffer (or sub-buffer) of the fake device.
#[derive(Debug)]
pub struct FakeBo {
    mem: Arc<Mutex<Mem>>,
    offset: usize,
    size: usize,
    flags: BoFlags,
    group: u32,
}

impl FakeBo {
    fn lock(&self) -> std::sync::MutexGuard<'_, Mem> {
        self.mem.lock().expect("fake buffer")
    }

    /// `len` bytes of the device copy from the buffer's start: what a kernel reads.
    fn device_bytes(&self, len: usize, what: &str) -> Result<Vec<u8>, DeviceError> {
        if len > self.size {
            return Err(fail(format!(
                "{what} holds {} bytes, the design reads {len}",
                self.size
            )));
        }
        let mem = self.lock();
        Ok(mem.device[self.offset..self.offset + len].to_vec())
    }

    fn check_range(&self, offset: usize, len: usize) -> Result<(), DeviceError> {
        if offset.checked_add(len).is_none_or(|end| end > self.size) {
            return Err(fail(format!(
                "{len} bytes at offset {offset} lie outside a {}-byte buffer",
                self.size
            )));
        }
        Ok(())
    }
}

fn bf16_values(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(2)
        .map(|h| bf16::from_bits(u16::from_le_bytes([h[0], h[1]])))
        .collect()
}

fn to_bf16_bytes(values: &[f32], rounding: Rounding) -> Vec<u8> {
    values
        .iter()
        .flat_map(|&v| bf16::to_bits(v, rounding).to_le_bytes())
        .collect()
}

impl FakeXrt {
    /// Runs one dispatch on the device copies: the design of `desc` at the shape the
    /// instruction stream gives.
    fn execute(
        &self,
        desc: &XclbinDesc,
        instructions: &FakeBo,
        words: u32,
        data: &[&FakeBo],
    ) -> Result<(), DeviceError> {
        if !instructions.flags.contains(BoFlags::CACHEABLE)
            || instructions.group != INSTRUCTION_GROUP
        {
            return Err(fail(
                "the instruction buffer is not a cacheable buffer in argument 1's group",
            ));
        }
        let stream = instructions.device_bytes(words as usize * 4, "the instruction buffer")?;
        let stream: Vec<u32> = stream
            .chunks_exact(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect();
        if stream.len() < 4 || stream[0] != MAGIC {
            return Err(fail(
                "the instruction buffer's device copy holds no instruction stream (not synced?)",
            ));
        }
        if stream[1] != words {
            return Err(fail(format!(
                "the instruction stream has {} words, the call says {words}",
                stream[1]
            )));
        }
        let kernel = desc.kernel();
        if stream[2] != kernel.index() as u32 {
            return Err(fail(format!(
                "an instruction stream of another kernel kind on this {:?} design",
                kernel
            )));
        }
        let rank = stream[3] as usize;
        let shape: Vec<usize> = stream
            .get(4..4 + rank)
            .ok_or_else(|| fail("a truncated instruction stream"))?
            .iter()
            .map(|&d| d as usize)
            .collect();
        for bo in data {
            if !bo.flags.contains(BoFlags::HOST_ONLY) || bo.group != DATA_GROUP {
                return Err(fail(
                    "a data buffer is not a host-only buffer in the data arguments' group",
                ));
            }
        }
        let expected = match kernel {
            Kernel::MatMul if desc.has_bias() => 4,
            Kernel::MatMul => 3,
            _ => 2,
        };
        if data.len() != expected {
            return Err(fail(format!(
                "the {} design takes {expected} data buffers, given {}",
                desc.kind,
                data.len()
            )));
        }
        let rounding = desc.rounding();
        let (output, produced) = match kernel {
            Kernel::MatMul => {
                let [m, k, n] = shape[..] else {
                    return Err(fail("a GEMM stream without M, K and N"));
                };
                let a = bf16_values(&data[0].device_bytes(m * k * 2, "A")?);
                let b = bf16_values(&data[1].device_bytes(k * n * 2, "B")?);
                let bias: Option<Vec<f32>> = if desc.has_bias() {
                    let bytes = data[3].device_bytes(n * 4, "the bias")?;
                    Some(
                        bytes
                            .chunks_exact(4)
                            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                            .collect(),
                    )
                } else {
                    None
                };
                let packed =
                    PackedB::new(&self.0.config.contract.with_rounding(rounding), &b, k, n);
                let mut c = vec![0f32; m * n];
                packed_gemm::gemm(rounding, &a, m, &packed, bias.as_deref(), &mut c);
                if desc.epilogue == "bias_gelu" {
                    gelu::gelu(rounding, &mut c);
                }
                let bytes = if desc.output == "bf16" {
                    to_bf16_bytes(&c, rounding)
                } else {
                    c.iter().flat_map(|v| v.to_le_bytes()).collect()
                };
                let moved = gemm_array_bytes(
                    &self.0.config.contract,
                    (m, k, n),
                    desc.has_bias(),
                    desc.output == "bf16",
                );
                self.state().measured.kinds[Kernel::MatMul.index()].array_bytes += moved;
                (2, vec![(0, bytes)])
            }
            Kernel::Softmax => {
                let [rows, cols, stride] = shape[..] else {
                    return Err(fail("a softmax stream without rows, values and stride"));
                };
                if cols > stride {
                    return Err(fail("a softmax row wider than its stride"));
                }
                let x = bf16_values(&data[0].device_bytes(rows * stride * 2, "the input")?);
                data[1].device_bytes(rows * stride * 2, "the output")?;
                // Each row's first `cols` values, written back at the same places; the
                // other values of the output are not touched.
                let mut writes = Vec::with_capacity(rows);
                for r in 0..rows {
                    let mut row = x[r * stride..r * stride + cols].to_vec();
                    softmax::softmax_rows(rounding, &mut row, cols);
                    writes.push((r * stride * 2, to_bf16_bytes(&row, rounding)));
                }
                (1, writes)
            }
            Kernel::Gelu => {
                let [len] = shape[..] else {
                    return Err(fail("a GELU stream without its length"));
                };
                let mut x = bf16_values(&data[0].device_bytes(len * 2, "the input")?);
                data[1].device_bytes(len * 2, "the output")?;
                gelu::gelu(rounding, &mut x);
                (1, vec![(0, to_bf16_bytes(&x, rounding))])
            }
        };
        // The inputs' pending bytes were read by this dispatch (each buffer once).
        let mut read_in = 0;
        let mut seen = Vec::new();
        for (i, bo) in data.iter().enumerate() {
            if i == output {
                continue;
            }
            let mut mem = bo.lock();
            if !seen.contains(&mem.id) {
                seen.push(mem.id);
                read_in += std::mem::take(&mut mem.pending_in);
            }
        }
        {
            let out = data[output];
            let mut mem = out.lock();
            for (at, bytes) in produced {
                let start = out.offset + at;
                mem.device[start..start + bytes.len()].copy_from_slice(&bytes);
            }
            mem.written_by = Some(kernel);
        }
        let mut s = self.state();
        let k = &mut s.measured.kinds[kernel.index()];
        k.bytes_in += read_in;
        Ok(())
    }
}

impl Xrt for FakeXrt {
    type Device = FakeDevice;
    type Xclbin = FakeXclbin;
    type Context = FakeContext;
    type Kernel = FakeKernel;
    type Bo = FakeBo;

    fn open(&self, index: u32) -> Result<FakeDevice, DeviceError> {
        if index != 0 {
            return Err(DeviceError::Unavailable(format!(
                "fake XRT: no device {index}"
            )));
        }
        Ok(FakeDevice { index })
    }

    fn device_name(&self, _device: &FakeDevice) -> String {
        self.0.config.name.clone()
    }

    fn load_xclbin(&self, device: &FakeDevice, path: &Path) -> Result<FakeXclbin, DeviceError> {
        let _ = device.index;
        let text = std::fs::read_to_string(path).map_err(|e| {
            DeviceError::Unavailable(format!("fake XRT: cannot read {}: {e}", path.display()))
        })?;
        let desc: XclbinDesc = toml::from_str(&text).map_err(|e| {
            DeviceError::Unavailable(format!(
                "fake XRT: {} is not an xclbin: {e}",
                path.display()
            ))
        })?;
        Ok(FakeXclbin {
            desc: Arc::new(desc),
        })
    }

    fn create_context(
        &self,
        _device: &FakeDevice,
        xclbin: &FakeXclbin,
    ) -> Result<FakeContext, DeviceError> {
        let mut s = self.state();
        if s.live_contexts + self.0.config.held_elsewhere >= self.0.config.budget {
            return Err(fail(format!(
                "create hw_context: MGMT_ERT_NOAVAIL ({} of {} contexts in use)",
                s.live_contexts + self.0.config.held_elsewhere,
                self.0.config.budget
            )));
        }
        s.live_contexts += 1;
        s.max_live_contexts = s.max_live_contexts.max(s.live_contexts);
        s.contexts_created += 1;
        Ok(FakeContext {
            desc: xclbin.desc.clone(),
            token: Arc::new(ContextToken {
                shared: self.0.clone(),
            }),
        })
    }

    fn open_kernel(&self, context: &FakeContext, name: &str) -> Result<FakeKernel, DeviceError> {
        if name != context.desc.kernel_name {
            return Err(fail(format!(
                "the xclbin has no kernel {name:?} (it has {:?})",
                context.desc.kernel_name
            )));
        }
        Ok(FakeKernel {
            desc: context.desc.clone(),
            _context: context.token.clone(),
        })
    }

    fn alloc(
        &self,
        _device: &FakeDevice,
        _kernel: &FakeKernel,
        arg: u32,
        bytes: usize,
        flags: BoFlags,
    ) -> Result<FakeBo, DeviceError> {
        let group = match arg {
            1 => INSTRUCTION_GROUP,
            3..=6 => DATA_GROUP,
            _ => return Err(fail(format!("kernel argument {arg} is not a buffer"))),
        };
        if bytes == 0 {
            return Err(fail("a buffer of 0 bytes"));
        }
        Ok(FakeBo {
            mem: Arc::new(Mutex::new(Mem {
                host: vec![0xff; bytes],
                device: vec![0xff; bytes],
                pending_in: 0,
                written_by: None,
                id: NEXT_MEM.fetch_add(1, Ordering::Relaxed),
            })),
            offset: 0,
            size: bytes,
            flags,
            group,
        })
    }

    fn sub(&self, bo: &FakeBo, offset: usize, bytes: usize) -> Result<FakeBo, DeviceError> {
        bo.check_range(offset, bytes)?;
        if bytes == 0 {
            return Err(fail("a sub-buffer of 0 bytes"));
        }
        Ok(FakeBo {
            mem: bo.mem.clone(),
            offset: bo.offset + offset,
            size: bytes,
            flags: bo.flags,
            group: bo.group,
        })
    }

    fn size(&self, bo: &FakeBo) -> usize {
        bo.size
    }

    fn write(&self, bo: &mut FakeBo, data: &[u8], offset: usize) -> Result<(), DeviceError> {
        bo.check_range(offset, data.len())?;
        let start = bo.offset + offset;
        bo.lock().host[start..start + data.len()].copy_from_slice(data);
        Ok(())
    }

    fn read(&self, bo: &FakeBo, out: &mut [u8], offset: usize) -> Result<(), DeviceError> {
        bo.check_range(offset, out.len())?;
        let start = bo.offset + offset;
        out.copy_from_slice(&bo.lock().host[start..start + out.len()]);
        Ok(())
    }

    fn sync_to_device(&self, bo: &FakeBo) -> Result<(), DeviceError> {
        {
            let mut mem = bo.lock();
            let range = bo.offset..bo.offset + bo.size;
            let Mem { host, device, .. } = &mut *mem;
            device[range.clone()].copy_from_slice(&host[range]);
            mem.pending_in += bo.size as u64;
        }
        let mut s = self.state();
        if bo.group == INSTRUCTION_GROUP {
            s.measured.instruction_bytes += bo.size as u64;
        } else {
            s.measured.synced_in += bo.size as u64;
        }
        Ok(())
    }

    fn sync_from_device(&self, bo: &mut FakeBo) -> Result<(), DeviceError> {
        let written_by = {
            let mut mem = bo.lock();
            let range = bo.offset..bo.offset + bo.size;
            let Mem { host, device, .. } = &mut *mem;
            host[range.clone()].copy_from_slice(&device[range]);
            mem.written_by
        };
        let mut s = self.state();
        s.measured.synced_out += bo.size as u64;
        if let Some(k) = written_by {
            s.measured.kinds[k.index()].bytes_out += bo.size as u64;
        }
        Ok(())
    }

    fn run(
        &self,
        kernel: &FakeKernel,
        instructions: &FakeBo,
        words: u32,
        data: &[&FakeBo],
        _timeout: Duration,
    ) -> Result<CommandState, DeviceError> {
        let number = {
            let mut s = self.state();
            s.dispatches += 1;
            s.measured.kinds[kernel.desc.kernel().index()].dispatches += 1;
            s.dispatches
        };
        let faults = &self.0.config.faults;
        if faults.hang_at == Some(number) {
            return Ok(CommandState::Running);
        }
        if faults.error_at == Some(number) {
            return Ok(CommandState::Error);
        }
        self.execute(&kernel.desc, instructions, words, data)?;
        Ok(CommandState::Completed)
    }
}

/// The bytes the GEMM design's shim DMAs move in one dispatch of the padded `m x k x n`,
/// walked as `kernels/aie/gemm/gemm.py`'s runtime sequence issues its tasks: first each
/// column's bias slice, repeated until it fills whole B objects; then for every row block of
/// 4 x 64 rows and every group of column tiles (up to [`gemm::GROUP`], [`gemm::GROUP_BF16`]
/// with a bfloat16 C), each core row's A, k-tile by k-tile, once; each column's B tiles of the
/// group for every k-tile; the group's C tiles of every column. Without an epilogue the design
/// may group row blocks instead (for every group of up to [`gemm::GROUP`] row blocks and every
/// column tile: each column's B k-tiles once, each core row's A tiles of the group's row
/// blocks for every k-tile, the group's C tiles), when that reads fewer bytes: both walks are
/// made and the one the design would choose counted.
pub fn gemm_array_bytes(
    contract: &GemmContract,
    (m, k, n): (usize, usize, usize),
    bias: bool,
    bf16_out: bool,
) -> u64 {
    let tile = contract.tile;
    let group = if bf16_out {
        gemm::GROUP_BF16
    } else {
        gemm::GROUP
    };
    let (a_tile, b_tile) = (tile.m * tile.k * 2, tile.k * tile.n * 2);
    let c_tile = tile.m * tile.n * if bf16_out { 2 } else { 4 };
    let col_tiles = n / (contract.columns * tile.n);
    let mut bytes = 0;
    if bias {
        // The slice of a column: its column tiles' floats, as bfloat16-sized halves.
        let slice = col_tiles * tile.n * 2 * 2;
        let mut objects = 1;
        while (objects * b_tile) % slice != 0 {
            objects += 1;
        }
        bytes += contract.columns * objects * b_tile;
    }
    let row_blocks = m / (contract.rows * tile.m);
    // (bytes read, bytes written) of the groups of column tiles, then of row blocks.
    let (mut by_columns, mut by_rows) = ((0, 0), (0, 0));
    for _block in 0..row_blocks {
        let mut first = 0;
        while first < col_tiles {
            let size = group.min(col_tiles - first);
            for _row in 0..contract.rows {
                for _k_tile in (0..k).step_by(tile.k) {
                    by_columns.0 += a_tile;
                }
            }
            for _col in 0..contract.columns {
                for _k_tile in (0..k).step_by(tile.k) {
                    by_columns.0 += size * b_tile;
                }
                by_columns.1 += size * contract.rows * c_tile;
            }
            first += size;
        }
    }
    let mut first = 0;
    while first < row_blocks {
        let size = group.min(row_blocks - first);
        for _column_tile in 0..col_tiles {
            for _col in 0..contract.columns {
                for _k_tile in (0..k).step_by(tile.k) {
                    by_rows.0 += b_tile;
                }
                by_rows.1 += size * contract.rows * c_tile;
            }
            for _row in 0..contract.rows {
                for _k_tile in (0..k).step_by(tile.k) {
                    by_rows.0 += size * a_tile;
                }
            }
        }
        first += size;
    }
    let plain = !bias && !bf16_out;
    let (read, written) = if plain && by_rows.0 < by_columns.0 {
        by_rows
    } else {
        by_columns
    };
    (bytes + read + written) as u64
}

/// One thing the host code could get wrong, done on purpose by [`Sabotaged`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sabotage {
    /// Sub-buffers start this many bytes after where they were asked for, or as late as the
    /// parent buffer allows when that is less: a wrong offset inside the buffer.
    SubOffset(usize),
    /// The `n`-th sync of a buffer to the device (from 1, instruction buffers included) does
    /// nothing.
    SkipSyncToDevice(u64),
    /// Syncs from the device do nothing.
    SkipSyncFromDevice,
    /// A dispatch gets its first two data buffers the other way round.
    SwapOperands,
    /// Writes to a buffer after its first one do nothing: the device keeps computing on
    /// stale data.
    StaleWrites,
}

/// An [`Xrt`] that does what `X` does except for one [`Sabotage`].
pub struct Sabotaged<X: Xrt> {
    inner: X,
    sabotage: Sabotage,
    syncs: AtomicU64,
    written: Mutex<Vec<usize>>,
}

impl<X: Xrt> Sabotaged<X> {
    /// `inner` with `sabotage`.
    pub fn new(inner: X, sabotage: Sabotage) -> Sabotaged<X> {
        Sabotaged {
            inner,
            sabotage,
            syncs: AtomicU64::new(0),
            written: Mutex::default(),
        }
    }

    /// Syncs to the device asked for so far (the skipped one included).
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }
}

impl<X: Xrt> Xrt for Sabotaged<X> {
    type Device = X::Device;
    type Xclbin = X::Xclbin;
    type Context = X::Context;
    type Kernel = X::Kernel;
    type Bo = X::Bo;

    fn open(&self, index: u32) -> Result<X::Device, DeviceError> {
        self.inner.open(index)
    }

    fn device_name(&self, device: &X::Device) -> String {
        self.inner.device_name(device)
    }

    fn load_xclbin(&self, device: &X::Device, path: &Path) -> Result<X::Xclbin, DeviceError> {
        self.inner.load_xclbin(device, path)
    }

    fn create_context(
        &self,
        device: &X::Device,
        xclbin: &X::Xclbin,
    ) -> Result<X::Context, DeviceError> {
        self.inner.create_context(device, xclbin)
    }

    fn open_kernel(&self, context: &X::Context, name: &str) -> Result<X::Kernel, DeviceError> {
        self.inner.open_kernel(context, name)
    }

    fn alloc(
        &self,
        device: &X::Device,
        kernel: &X::Kernel,
        arg: u32,
        bytes: usize,
        flags: BoFlags,
    ) -> Result<X::Bo, DeviceError> {
        self.inner.alloc(device, kernel, arg, bytes, flags)
    }

    fn sub(&self, bo: &X::Bo, offset: usize, bytes: usize) -> Result<X::Bo, DeviceError> {
        let offset = match self.sabotage {
            // Shifted, but kept inside the buffer: a wrong offset XRT itself would take.
            Sabotage::SubOffset(s) => (offset + s).min(self.inner.size(bo).saturating_sub(bytes)),
            _ => offset,
        };
        self.inner.sub(bo, offset, bytes)
    }

    fn size(&self, bo: &X::Bo) -> usize {
        self.inner.size(bo)
    }

    fn write(&self, bo: &mut X::Bo, data: &[u8], offset: usize) -> Result<(), DeviceError> {
        if self.sabotage == Sabotage::StaleWrites {
            let key = bo as *const X::Bo as usize;
            let mut written = self.written.lock().expect("written buffers");
            if written.contains(&key) {
                return Ok(());
            }
            written.push(key);
        }
        self.inner.write(bo, data, offset)
    }

    fn read(&self, bo: &X::Bo, out: &mut [u8], offset: usize) -> Result<(), DeviceError> {
        self.inner.read(bo, out, offset)
    }

    fn sync_to_device(&self, bo: &X::Bo) -> Result<(), DeviceError> {
        let n = self.syncs.fetch_add(1, Ordering::Relaxed) + 1;
        if self.sabotage == Sabotage::SkipSyncToDevice(n) {
            return Ok(());
        }
        self.inner.sync_to_device(bo)
    }

    fn sync_from_device(&self, bo: &mut X::Bo) -> Result<(), DeviceError> {
        if self.sabotage == Sabotage::SkipSyncFromDevice {
            return Ok(());
        }
        self.inner.sync_from_device(bo)
    }

    fn run(
        &self,
        kernel: &X::Kernel,
        instructions: &X::Bo,
        words: u32,
        data: &[&X::Bo],
        timeout: Duration,
    ) -> Result<CommandState, DeviceError> {
        let mut data = data.to_vec();
        if self.sabotage == Sabotage::SwapOperands && data.len() >= 2 {
            data.swap(0, 1);
        }
        self.inner.run(kernel, instructions, words, &data, timeout)
    }
}

/// A fresh temporary directory for a test's kernels, removed on drop.
pub struct TempKernels {
    /// The directory.
    pub dir: PathBuf,
}

impl TempKernels {
    /// A new empty directory named after `tag`.
    pub fn new(tag: &str) -> TempKernels {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "amanuensis-fake-kernels-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temporary kernel directory");
        TempKernels { dir }
    }
}

impl Drop for TempKernels {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
