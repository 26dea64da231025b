//! Bindings to AMD/Xilinx XRT for running kernels on Ryzen AI NPUs.
//!
//! Three levels:
//! - `ffi` (with the `xrt` feature): the raw C ABI of the C++ shim in
//!   `shim/xrt_shim.h`.
//! - checked calls (private): each shim call turned into a `Result` carrying
//!   XRT's own message.
//! - safe types: [`Device`], [`Xclbin`], [`HwContext`], [`Kernel`], [`Bo`] and
//!   [`Run`], which free their XRT object on drop and keep what they depend on
//!   alive (a [`Bo`] holds its [`Device`], a [`Run`] its kernel and buffers).
//!
//! Without the `xrt` feature nothing native is built: [`Device::open`],
//! [`Xclbin::from_file`], [`Xclbin::from_bytes`] and [`check_hw_context`]
//! return an [`ErrorKind::NotBuilt`] error, and since every other type is
//! reached through those, no other call can be made.
//!
//! The NPU flow is: open the [`Device`], load the [`Xclbin`], create a
//! [`HwContext`] (needs XRT >= 2.17 with the amdxdna driver), open the
//! [`Kernel`], allocate [`Bo`]s in the memory groups given by
//! [`Kernel::group_id`], write and sync them, [`Kernel::start_npu`], then
//! [`Run::wait`].
//!
//! # Building with `--features xrt`
//!
//! The build script compiles `shim/xrt_shim.cpp` (C++17) and links
//! `libxrt_coreutil`. It takes the first XRT that has `xrt/xrt_device.h` and
//! `libxrt_coreutil` among: `XILINX_XRT` (its `include/` and `lib/`),
//! `XRT_INCLUDE_DIR` with `XRT_LIB_DIR`, pkg-config's `xrt`, `/opt/xilinx/xrt`,
//! and Debian's layout (`/usr/include/xrt`, the multiarch library directory).
//! With no XRT found the build fails with a message naming these variables.
//! hw_context support is compiled in when the XRT provides
//! `xrt/xrt_hw_context.h`; XRT only finds devices at run time when its driver
//! layer can be loaded (for `/opt/xilinx/xrt`, source its `setup.sh`).

#![warn(missing_docs)]

#[cfg(feature = "xrt")]
pub mod ffi;

#[cfg_attr(feature = "xrt", path = "native.rs")]
#[cfg_attr(not(feature = "xrt"), path = "stub.rs")]
mod checked;

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::ops::BitOr;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::Duration;

/// The message of every [`ErrorKind::NotBuilt`] error.
pub const NOT_BUILT_MESSAGE: &str = "amanuensis was built without XRT support: rebuild with --features xrt (needs XRT, e.g. Debian's libxrt-dev or /opt/xilinx/xrt)";

/// The opcode [`Kernel::start_npu`] passes as the kernel's first argument:
/// the NPU firmware's "run instruction stream" command.
pub const NPU_OPCODE: u64 = 3;

/// The most data buffers one [`Kernel::start_npu`] call accepts.
pub const MAX_DATA_BUFFERS: usize = 5;

/// How long dropping an unfinished [`Run`] waits for it before giving up.
pub const RUN_DROP_WAIT: Duration = Duration::from_secs(10);

/// What went wrong, coarsely; the details are in [`XrtError::message`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The crate was built without the `xrt` feature.
    NotBuilt,
    /// The XRT the crate was built against lacks the feature (hw_context).
    Unsupported,
    /// An argument was refused before anything reached XRT.
    InvalidInput,
    /// A file could not be read.
    Io,
    /// XRT itself reported the failure; the message is XRT's own.
    Xrt,
}

/// A failed XRT operation: which operation, what kind of failure, and the
/// message (for [`ErrorKind::Xrt`], exactly what XRT said).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{operation}: {message}{}", .hint.map(|hint| format!(" ({hint})")).unwrap_or_default())]
pub struct XrtError {
    kind: ErrorKind,
    operation: String,
    message: String,
    hint: Option<&'static str>,
}

impl XrtError {
    pub(crate) fn new(kind: ErrorKind, operation: String, message: String) -> Self {
        Self {
            kind,
            operation,
            message,
            hint: None,
        }
    }

    fn invalid(operation: String, message: String) -> Self {
        Self::new(ErrorKind::InvalidInput, operation, message)
    }

    fn with_hint(mut self, hint: &'static str) -> Self {
        self.hint = Some(hint);
        self
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The operation that failed, e.g. `open XRT device 0`.
    pub fn operation(&self) -> &str {
        &self.operation
    }

    /// The failure message: XRT's exception text for [`ErrorKind::Xrt`],
    /// otherwise a sentence saying what was wrong and what to do.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Advice added to XRT's message where XRT's own does not say what to
    /// do; shown in parentheses by `Display`.
    pub fn hint(&self) -> Option<&'static str> {
        self.hint
    }
}

const DEVICE_HINT: &str = "check that an NPU is present, that the amdxdna driver is loaded, and that XRT >= 2.17 is installed with XILINX_XRT pointing at it, e.g. by sourcing its setup.sh; `xrt-smi examine` lists the devices XRT sees";

/// The XRT version the crate was compiled against (e.g. `"2.17.319"`), or
/// `None` when built without the `xrt` feature.
pub fn xrt_version() -> Option<&'static str> {
    checked::xrt_version()
}

/// Whether the XRT the crate was compiled against provides `xrt::hw_context`
/// (needed for NPUs); `false` without the `xrt` feature.
pub fn has_hw_context() -> bool {
    checked::has_hw_context()
}

/// `Ok` when [`HwContext`] and [`Kernel`] can work with this build; otherwise
/// the error [`HwContext::new`] would return ([`ErrorKind::Unsupported`] for
/// an XRT without hw_context, [`ErrorKind::NotBuilt`] without the feature).
/// Needs no device.
pub fn check_hw_context() -> Result<(), XrtError> {
    checked::require_hw_context()
}

/// An open XRT device. Cloning shares the same device.
#[derive(Clone)]
pub struct Device {
    inner: Arc<DeviceInner>,
}

struct DeviceInner {
    handle: checked::DeviceHandle,
    index: u32,
}

impl Device {
    /// Opens device `index` (0 is the first NPU). Fails with XRT's message
    /// when the device does not exist or cannot be opened.
    pub fn open(index: u32) -> Result<Self, XrtError> {
        let handle = checked::device_open(index).map_err(|error| match error.kind {
            ErrorKind::Xrt => error.with_hint(DEVICE_HINT),
            _ => error,
        })?;
        Ok(Self {
            inner: Arc::new(DeviceInner { handle, index }),
        })
    }

    /// The index the device was opened with.
    pub fn index(&self) -> u32 {
        self.inner.index
    }

    /// The device name XRT reports (e.g. `"RyzenAI-npu1"`).
    pub fn name(&self) -> Result<String, XrtError> {
        checked::device_name(&self.inner.handle)
    }

    /// Registers `xclbin` with the device, as [`HwContext::new`] does before
    /// creating a context. Needs hw_context support (see [`check_hw_context`]).
    pub fn register_xclbin(&self, xclbin: &Xclbin) -> Result<(), XrtError> {
        checked::device_register_xclbin(&self.inner.handle, &xclbin.inner.handle)
    }
}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Device")
            .field("index", &self.inner.index)
            .finish_non_exhaustive()
    }
}

/// A loaded xclbin (the NPU design: partition, kernels, metadata). Cloning
/// shares the same xclbin.
#[derive(Clone)]
pub struct Xclbin {
    inner: Arc<XclbinInner>,
}

struct XclbinInner {
    handle: checked::XclbinHandle,
    kernel_names: Vec<String>,
    uuid: [u8; 16],
}

impl Xclbin {
    /// Reads the xclbin at `path`. Fails with [`ErrorKind::Io`] when the file
    /// cannot be read, [`ErrorKind::InvalidInput`] when it is not a
    /// well-framed xclbin, [`ErrorKind::Xrt`] when XRT rejects its contents.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, XrtError> {
        Self::from_handle(checked::xclbin_load_file(path.as_ref())?)
    }

    /// Loads an xclbin from its bytes; fails as [`Xclbin::from_file`] does.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, XrtError> {
        Self::from_handle(checked::xclbin_load_bytes(bytes)?)
    }

    fn from_handle(handle: checked::XclbinHandle) -> Result<Self, XrtError> {
        let kernel_names = checked::xclbin_kernel_names(&handle)?;
        let uuid = checked::xclbin_uuid(&handle)?;
        Ok(Self {
            inner: Arc::new(XclbinInner {
                handle,
                kernel_names,
                uuid,
            }),
        })
    }

    /// Names of the kernels the xclbin declares, in XRT's order.
    pub fn kernel_names(&self) -> &[String] {
        &self.inner.kernel_names
    }

    /// The xclbin's UUID, the identity XRT uses to match contexts to designs.
    pub fn uuid(&self) -> [u8; 16] {
        self.inner.uuid
    }
}

impl fmt::Debug for Xclbin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Xclbin")
            .field("kernel_names", &self.inner.kernel_names)
            .field("uuid", &self.inner.uuid)
            .finish_non_exhaustive()
    }
}

/// A hardware context: an xclbin's design placed on a device's NPU columns.
/// Holds its [`Device`] and [`Xclbin`]. Cloning shares the same context.
#[derive(Clone)]
pub struct HwContext {
    inner: Arc<HwContextInner>,
}

// Field order matters: the context is freed before the device it lives on.
struct HwContextInner {
    handle: checked::HwContextHandle,
    device: Device,
    xclbin: Xclbin,
}

impl HwContext {
    /// Registers `xclbin` on `device` (again, if it already is) and creates a
    /// context for it. On an XRT without hw_context this fails with
    /// [`ErrorKind::Unsupported`] before touching the device.
    pub fn new(device: &Device, xclbin: &Xclbin) -> Result<Self, XrtError> {
        device.register_xclbin(xclbin)?;
        let handle = checked::hw_context_create(&device.inner.handle, &xclbin.inner.handle)?;
        Ok(Self {
            inner: Arc::new(HwContextInner {
                handle,
                device: device.clone(),
                xclbin: xclbin.clone(),
            }),
        })
    }

    /// The device the context lives on.
    pub fn device(&self) -> &Device {
        &self.inner.device
    }

    /// The xclbin the context was created for.
    pub fn xclbin(&self) -> &Xclbin {
        &self.inner.xclbin
    }
}

impl fmt::Debug for HwContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HwContext")
            .field("device", &self.inner.device)
            .field("xclbin", &self.inner.xclbin)
            .finish_non_exhaustive()
    }
}

/// A memory bank group, as returned by [`Kernel::group_id`] and required by
/// [`Bo::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MemoryGroup(u32);

impl MemoryGroup {
    /// Wraps a raw XRT memory group id.
    pub const fn new(id: u32) -> Self {
        Self(id)
    }

    /// The raw XRT memory group id.
    pub const fn get(self) -> u32 {
        self.0
    }
}

/// A kernel of a [`HwContext`]. Holds its context. Cloning shares the same
/// kernel.
#[derive(Clone)]
pub struct Kernel {
    inner: Arc<KernelInner>,
}

// Field order matters: the kernel is freed before its context.
struct KernelInner {
    handle: checked::KernelHandle,
    context: HwContext,
    name: String,
}

impl Kernel {
    /// Opens the kernel `name` (one of [`Xclbin::kernel_names`]) in `context`.
    pub fn new(context: &HwContext, name: &str) -> Result<Self, XrtError> {
        let handle = checked::kernel_open(&context.inner.handle, name)?;
        Ok(Self {
            inner: Arc::new(KernelInner {
                handle,
                context: context.clone(),
                name: name.to_owned(),
            }),
        })
    }

    /// The kernel's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The context the kernel was opened in.
    pub fn context(&self) -> &HwContext {
        &self.inner.context
    }

    /// The memory group to allocate the buffer for argument `arg_index` in.
    /// In the NPU flow argument 1 is the instruction buffer and arguments 3,
    /// 4, ... are the data buffers.
    pub fn group_id(&self, arg_index: u32) -> Result<MemoryGroup, XrtError> {
        checked::kernel_group_id(&self.inner.handle, arg_index).map(MemoryGroup)
    }

    /// Starts the kernel as the NPU host flow does, with arguments
    /// ([`NPU_OPCODE`], `instructions`, `instruction_count`, `data[0]`, ...).
    /// `instruction_count` is the number of 32-bit words of the instruction
    /// stream at the start of `instructions`; `data` holds 1 to
    /// [`MAX_DATA_BUFFERS`] buffers. All buffers must be on the kernel's device
    /// and synced to it. The buffers stay borrowed while the [`Run`] lives, so
    /// they cannot be written, synced from the device or dropped before it is.
    pub fn start_npu<'a>(
        &self,
        instructions: &'a Bo,
        instruction_count: u32,
        data: &[&'a Bo],
    ) -> Result<Run<'a>, XrtError> {
        let operation = || format!("start kernel '{}'", self.inner.name);
        check_npu_args(instructions.size(), instruction_count, data.len())
            .map_err(|message| XrtError::invalid(operation(), message))?;
        let device = self.inner.context.device().index();
        for bo in std::iter::once(&instructions).chain(data) {
            let bo_device = bo.inner.device.index();
            if bo_device != device {
                return Err(XrtError::invalid(
                    operation(),
                    format!(
                        "a buffer was allocated on device {bo_device} but the kernel runs on device {device}; allocate it on the kernel's device"
                    ),
                ));
            }
        }
        let data_handles: Vec<&checked::BoHandle> =
            data.iter().map(|bo| &bo.inner.handle).collect();
        let handle = checked::kernel_start_npu(
            &self.inner.handle,
            NPU_OPCODE,
            &instructions.inner.handle,
            instruction_count,
            &data_handles,
        )?;
        let buffers = std::iter::once(instructions)
            .chain(data.iter().copied())
            .map(|bo| Arc::clone(&bo.inner))
            .collect();
        Ok(Run {
            handle: ManuallyDrop::new(handle),
            buffers: ManuallyDrop::new(buffers),
            _kernel: self.clone(),
            finished: Cell::new(false),
            _borrow: PhantomData,
        })
    }
}

impl fmt::Debug for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kernel")
            .field("name", &self.inner.name)
            .field("context", &self.inner.context)
            .finish_non_exhaustive()
    }
}

/// Checks [`Kernel::start_npu`]'s arguments; returns what is wrong.
fn check_npu_args(
    instruction_bytes: usize,
    instruction_count: u32,
    data_buffers: usize,
) -> Result<(), String> {
    if !(1..=MAX_DATA_BUFFERS).contains(&data_buffers) {
        return Err(format!(
            "a run takes 1 to {MAX_DATA_BUFFERS} data buffers, got {data_buffers}"
        ));
    }
    if instruction_count == 0 {
        return Err(
            "instruction count 0: pass the number of 32-bit words of the instruction stream"
                .to_owned(),
        );
    }
    let needed = u64::from(instruction_count) * 4;
    if needed > instruction_bytes as u64 {
        return Err(format!(
            "{instruction_count} instructions need {needed} bytes but the instruction buffer holds {instruction_bytes}; allocate a larger buffer or pass the right count"
        ));
    }
    Ok(())
}

/// Buffer object flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct BoFlags(u32);

impl BoFlags {
    /// No flags: XRT's default placement.
    pub const NONE: Self = Self(0);
    /// XRT's `XCL_BO_FLAGS_CACHEABLE`; the NPU flow uses it for the
    /// instruction buffer.
    pub const CACHEABLE: Self = Self(1 << 24);
    /// XRT's `XRT_BO_FLAGS_HOST_ONLY`; the NPU flow uses it for data buffers.
    pub const HOST_ONLY: Self = Self(1 << 29);

    /// The raw flag bits passed to XRT.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Whether every flag of `other` is set in `self`.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for BoFlags {
    type Output = Self;

    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

/// A buffer object: device-visible memory with a host copy. Holds its
/// [`Device`], so it cannot outlive it.
pub struct Bo {
    inner: Arc<BoInner>,
}

// Field order matters: the buffer is freed before its device.
struct BoInner {
    handle: checked::BoHandle,
    /// For a sub-buffer, the buffer whose memory it shares.
    _parent: Option<Bo>,
    device: Device,
    size: usize,
    flags: BoFlags,
    group: MemoryGroup,
}

impl Bo {
    /// Allocates a `size`-byte buffer on `device` in memory group `group`.
    /// A size of 0 is refused with [`ErrorKind::InvalidInput`] before XRT is
    /// called.
    pub fn new(
        device: &Device,
        size: usize,
        flags: BoFlags,
        group: MemoryGroup,
    ) -> Result<Self, XrtError> {
        check_bo_size(size).map_err(|message| {
            XrtError::invalid(format!("allocate a {size}-byte XRT buffer"), message)
        })?;
        let handle = checked::bo_alloc(&device.inner.handle, size, flags.bits(), group.get())?;
        Ok(Self {
            inner: Arc::new(BoInner {
                handle,
                _parent: None,
                device: device.clone(),
                size,
                flags,
                group,
            }),
        })
    }

    /// A buffer over `size` bytes of this one at `offset`, sharing its memory:
    /// what a kernel argument sees of part of a larger buffer (one dispatch's
    /// rows of an intermediate result). It keeps this buffer alive. The range
    /// must lie inside this buffer and hold at least one byte.
    pub fn sub(&self, offset: usize, size: usize) -> Result<Self, XrtError> {
        let what = || format!("make a {size}-byte sub-buffer at offset {offset} of an XRT buffer");
        check_bo_size(size).map_err(|message| XrtError::invalid(what(), message))?;
        check_range(self.inner.size, offset, size)
            .map_err(|message| XrtError::invalid(what(), message))?;
        let handle = checked::bo_sub(&self.inner.handle, size, offset)?;
        Ok(Self {
            inner: Arc::new(BoInner {
                handle,
                _parent: Some(self.clone_handle()),
                device: self.inner.device.clone(),
                size,
                flags: self.inner.flags,
                group: self.inner.group,
            }),
        })
    }

    /// Another reference to the same buffer (private: `Bo` is not `Clone`, so that
    /// `&mut` writes stay exclusive for users).
    fn clone_handle(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }

    /// Size in bytes.
    pub fn size(&self) -> usize {
        self.inner.size
    }

    /// The flags the buffer was allocated with.
    pub fn flags(&self) -> BoFlags {
        self.inner.flags
    }

    /// The memory group the buffer was allocated in.
    pub fn group(&self) -> MemoryGroup {
        self.inner.group
    }

    /// The device the buffer lives on.
    pub fn device(&self) -> &Device {
        &self.inner.device
    }

    /// Copies `data` into the host copy at `offset`. Does not sync: call
    /// [`Bo::sync_to_device`] before a run reads it.
    pub fn write(&mut self, data: &[u8], offset: usize) -> Result<(), XrtError> {
        check_range(self.inner.size, offset, data.len()).map_err(|message| {
            XrtError::invalid(
                format!(
                    "write {} bytes at offset {offset} into an XRT buffer",
                    data.len()
                ),
                message,
            )
        })?;
        if data.is_empty() {
            return Ok(());
        }
        checked::bo_write(&self.inner.handle, data, offset)
    }

    /// Copies `out.len()` bytes of the host copy at `offset` into `out`. Call
    /// [`Bo::sync_from_device`] first to see what a run wrote.
    pub fn read(&self, out: &mut [u8], offset: usize) -> Result<(), XrtError> {
        check_range(self.inner.size, offset, out.len()).map_err(|message| {
            XrtError::invalid(
                format!(
                    "read {} bytes at offset {offset} from an XRT buffer",
                    out.len()
                ),
                message,
            )
        })?;
        if out.is_empty() {
            return Ok(());
        }
        checked::bo_read(&self.inner.handle, out, offset)
    }

    /// Makes the whole host copy visible to the device.
    pub fn sync_to_device(&self) -> Result<(), XrtError> {
        self.sync_range_to_device(0, self.inner.size)
    }

    /// Makes `len` bytes at `offset` of the host copy visible to the device.
    pub fn sync_range_to_device(&self, offset: usize, len: usize) -> Result<(), XrtError> {
        self.sync(true, offset, len)
    }

    /// Brings the whole buffer's device contents into the host copy.
    pub fn sync_from_device(&mut self) -> Result<(), XrtError> {
        self.sync_range_from_device(0, self.inner.size)
    }

    /// Brings `len` bytes at `offset` of the device contents into the host copy.
    pub fn sync_range_from_device(&mut self, offset: usize, len: usize) -> Result<(), XrtError> {
        self.sync(false, offset, len)
    }

    fn sync(&self, to_device: bool, offset: usize, len: usize) -> Result<(), XrtError> {
        check_range(self.inner.size, offset, len).map_err(|message| {
            let way = if to_device { "to" } else { "from" };
            XrtError::invalid(
                format!("sync {len} bytes at offset {offset} of an XRT buffer {way} the device"),
                message,
            )
        })?;
        checked::bo_sync(&self.inner.handle, to_device, len, offset)
    }

    /// The host address of the buffer, valid for [`Bo::size`] bytes while the
    /// buffer lives. Reading or writing through it is up to the caller: no
    /// [`Run`] using the buffer may be in flight, and accesses must not race
    /// with [`Bo::write`], [`Bo::read`] or the syncs.
    pub fn host_ptr(&self) -> Result<NonNull<u8>, XrtError> {
        checked::bo_map(&self.inner.handle)
    }
}

impl fmt::Debug for Bo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bo")
            .field("size", &self.inner.size)
            .field("flags", &self.inner.flags)
            .field("group", &self.inner.group)
            .field("device", &self.inner.device)
            .finish_non_exhaustive()
    }
}

/// Refuses what XRT cannot allocate; returns what is wrong.
fn check_bo_size(size: usize) -> Result<(), String> {
    if size == 0 {
        return Err(
            "buffer size 0: XRT buffers must hold at least one byte; pass the number of bytes the kernel argument needs"
                .to_owned(),
        );
    }
    Ok(())
}

/// Checks that `[offset, offset + len)` lies inside a `size`-byte buffer.
fn check_range(size: usize, offset: usize, len: usize) -> Result<(), String> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(format!(
            "{len} bytes at offset {offset} lie outside the {size}-byte buffer; stay within the buffer or allocate a larger one"
        )),
    }
}

/// The state of a command, as XRT's `ert_cmd_state` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandState {
    /// Created, not yet submitted.
    New,
    /// Waiting in the queue.
    Queued,
    /// Executing.
    Running,
    /// Finished successfully.
    Completed,
    /// Finished with an error.
    Error,
    /// Aborted.
    Abort,
    /// Handed to the device.
    Submitted,
    /// Timed out: XRT also reports this when only the wait timed out and the
    /// command may still be executing.
    Timeout,
    /// The device stopped responding.
    NoResponse,
    /// A soft kernel returned an error.
    SkError,
    /// A soft kernel crashed.
    SkCrashed,
    /// A state this crate does not know, with XRT's raw value.
    Unknown(i32),
}

impl CommandState {
    /// Maps XRT's raw `ert_cmd_state` value.
    pub fn from_raw(raw: i32) -> Self {
        match raw {
            1 => Self::New,
            2 => Self::Queued,
            3 => Self::Running,
            4 => Self::Completed,
            5 => Self::Error,
            6 => Self::Abort,
            7 => Self::Submitted,
            8 => Self::Timeout,
            9 => Self::NoResponse,
            10 => Self::SkError,
            11 => Self::SkCrashed,
            other => Self::Unknown(other),
        }
    }

    /// XRT's raw `ert_cmd_state` value.
    pub fn as_raw(self) -> i32 {
        match self {
            Self::New => 1,
            Self::Queued => 2,
            Self::Running => 3,
            Self::Completed => 4,
            Self::Error => 5,
            Self::Abort => 6,
            Self::Submitted => 7,
            Self::Timeout => 8,
            Self::NoResponse => 9,
            Self::SkError => 10,
            Self::SkCrashed => 11,
            Self::Unknown(raw) => raw,
        }
    }

    /// Whether the command is over for certain (successfully or not), so the
    /// device no longer touches its buffers. [`CommandState::Timeout`] is not
    /// counted: it may only mean that the wait ran out.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            Self::Completed
                | Self::Error
                | Self::Abort
                | Self::NoResponse
                | Self::SkError
                | Self::SkCrashed
        )
    }

    /// Whether the command finished successfully.
    pub fn is_completed(self) -> bool {
        self == Self::Completed
    }
}

/// A started kernel invocation. Borrows its buffers for `'a` and keeps them,
/// and its kernel, alive while the device may use them.
///
/// Dropping a run that has not been seen finished waits up to
/// [`RUN_DROP_WAIT`] for it, then aborts it; if it is still not finished then,
/// the run and its buffers are leaked rather than freed under the device.
pub struct Run<'a> {
    handle: ManuallyDrop<checked::RunHandle>,
    // Shares ownership of the buffers so that they outlive the command even
    // if the borrow ends early (e.g. the Run is leaked with mem::forget).
    buffers: ManuallyDrop<Vec<Arc<BoInner>>>,
    _kernel: Kernel,
    finished: Cell<bool>,
    _borrow: PhantomData<&'a Bo>,
}

impl Run<'_> {
    /// Waits until the command leaves the running states or `timeout` passes,
    /// and returns its state: [`CommandState::Completed`] on success; a state
    /// that is not [`CommandState::is_finished`] means the wait timed out.
    /// A zero `timeout` waits without limit. Timeouts are rounded up to whole
    /// milliseconds and capped at `u32::MAX` milliseconds (about 49 days).
    pub fn wait(&mut self, timeout: Duration) -> Result<CommandState, XrtError> {
        let state = CommandState::from_raw(checked::run_wait(&self.handle, timeout_ms(timeout))?);
        if state.is_finished() {
            self.finished.set(true);
        }
        Ok(state)
    }

    /// Aborts the command (synchronously: XRT waits for the abort to complete)
    /// and returns the state it ended in. XRT leaves this to the caller when a
    /// wait returns [`CommandState::Timeout`]: a command that ran out its time
    /// otherwise stays with the device, and its buffers with it.
    pub fn abort(&mut self) -> Result<CommandState, XrtError> {
        let state = CommandState::from_raw(checked::run_abort(&self.handle)?);
        if state.is_finished() {
            self.finished.set(true);
        }
        Ok(state)
    }

    /// The command's current state, without waiting.
    pub fn state(&self) -> Result<CommandState, XrtError> {
        let state = CommandState::from_raw(checked::run_state(&self.handle)?);
        if state.is_finished() {
            self.finished.set(true);
        }
        Ok(state)
    }
}

impl Drop for Run<'_> {
    fn drop(&mut self) {
        if !self.finished.get() {
            let settled = checked::run_wait(&self.handle, timeout_ms(RUN_DROP_WAIT))
                .is_ok_and(|raw| CommandState::from_raw(raw).is_finished())
                || checked::run_abort(&self.handle)
                    .is_ok_and(|raw| CommandState::from_raw(raw).is_finished());
            if !settled {
                // The device may still access the buffers: leak the run and
                // the buffers instead of freeing memory it could write to.
                return;
            }
        }
        // SAFETY: both fields are dropped exactly once, here, and never used
        // afterwards.
        unsafe {
            ManuallyDrop::drop(&mut self.handle);
            ManuallyDrop::drop(&mut self.buffers);
        }
    }
}

impl fmt::Debug for Run<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Run")
            .field("kernel", &self._kernel.name())
            .field("buffers", &self.buffers.len())
            .field("finished", &self.finished.get())
            .finish_non_exhaustive()
    }
}

/// Converts a wait timeout to XRT's milliseconds: zero stays zero (no
/// limit), anything else rounds up and is capped at `u32::MAX`.
fn timeout_ms(timeout: Duration) -> u64 {
    let ms = timeout.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms.min(u128::from(u32::MAX))).unwrap_or(u64::from(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bo_size_zero_is_refused_with_advice() {
        let message = check_bo_size(0).unwrap_err();
        assert!(message.contains("buffer size 0"), "{message}");
        assert!(message.contains("at least one byte"), "{message}");
        assert_eq!(check_bo_size(1), Ok(()));
        assert_eq!(check_bo_size(usize::MAX), Ok(()));
    }

    #[test]
    fn ranges_outside_the_buffer_are_refused() {
        assert_eq!(check_range(16, 0, 16), Ok(()));
        assert_eq!(check_range(16, 16, 0), Ok(()));
        assert_eq!(check_range(16, 8, 8), Ok(()));
        assert!(check_range(16, 8, 9).is_err());
        assert!(check_range(16, 17, 0).is_err());
        let overflow = check_range(16, usize::MAX, 2).unwrap_err();
        assert!(
            overflow.contains("outside the 16-byte buffer"),
            "{overflow}"
        );
    }

    #[test]
    fn npu_arguments_are_checked() {
        assert_eq!(check_npu_args(64, 16, 3), Ok(()));
        assert_eq!(check_npu_args(64, 1, MAX_DATA_BUFFERS), Ok(()));
        assert!(check_npu_args(64, 16, 0).unwrap_err().contains("got 0"));
        assert!(
            check_npu_args(64, 16, MAX_DATA_BUFFERS + 1)
                .unwrap_err()
                .contains("got 6")
        );
        assert!(
            check_npu_args(64, 0, 1)
                .unwrap_err()
                .contains("instruction count 0")
        );
        let short = check_npu_args(63, 16, 1).unwrap_err();
        assert!(short.contains("need 64 bytes"), "{short}");
        assert!(short.contains("holds 63"), "{short}");
        assert_eq!(check_npu_args(usize::MAX, u32::MAX, 1), Ok(()));
    }

    #[test]
    fn command_states_round_trip_through_raw_values() {
        for raw in -1..=12 {
            assert_eq!(CommandState::from_raw(raw).as_raw(), raw);
        }
        assert_eq!(CommandState::from_raw(4), CommandState::Completed);
        assert_eq!(CommandState::from_raw(12), CommandState::Unknown(12));
        assert!(CommandState::Completed.is_completed());
        assert!(CommandState::Completed.is_finished());
        assert!(CommandState::Error.is_finished());
        assert!(!CommandState::Error.is_completed());
        assert!(!CommandState::Running.is_finished());
        assert!(!CommandState::Timeout.is_finished());
    }

    #[cfg(feature = "xrt")]
    #[test]
    fn constants_match_the_shim_header() {
        assert_eq!(BoFlags::NONE.bits(), ffi::XRT_SHIM_BO_FLAGS_NONE);
        assert_eq!(BoFlags::CACHEABLE.bits(), ffi::XRT_SHIM_BO_FLAGS_CACHEABLE);
        assert_eq!(BoFlags::HOST_ONLY.bits(), ffi::XRT_SHIM_BO_FLAGS_HOST_ONLY);
        assert_eq!(MAX_DATA_BUFFERS, ffi::XRT_SHIM_MAX_DATA_BOS);
        let states = [
            (CommandState::New, ffi::XRT_SHIM_CMD_STATE_NEW),
            (CommandState::Queued, ffi::XRT_SHIM_CMD_STATE_QUEUED),
            (CommandState::Running, ffi::XRT_SHIM_CMD_STATE_RUNNING),
            (CommandState::Completed, ffi::XRT_SHIM_CMD_STATE_COMPLETED),
            (CommandState::Error, ffi::XRT_SHIM_CMD_STATE_ERROR),
            (CommandState::Abort, ffi::XRT_SHIM_CMD_STATE_ABORT),
            (CommandState::Submitted, ffi::XRT_SHIM_CMD_STATE_SUBMITTED),
            (CommandState::Timeout, ffi::XRT_SHIM_CMD_STATE_TIMEOUT),
            (CommandState::NoResponse, ffi::XRT_SHIM_CMD_STATE_NORESPONSE),
            (CommandState::SkError, ffi::XRT_SHIM_CMD_STATE_SKERROR),
            (CommandState::SkCrashed, ffi::XRT_SHIM_CMD_STATE_SKCRASHED),
        ];
        for (state, raw) in states {
            assert_eq!(state.as_raw(), raw, "{state:?}");
        }
    }

    #[test]
    fn flags_combine() {
        let both = BoFlags::HOST_ONLY | BoFlags::CACHEABLE;
        assert!(both.contains(BoFlags::HOST_ONLY));
        assert!(both.contains(BoFlags::CACHEABLE));
        assert!(!BoFlags::HOST_ONLY.contains(BoFlags::CACHEABLE));
        assert_eq!(both.bits(), (1 << 29) | (1 << 24));
        assert_eq!(BoFlags::default(), BoFlags::NONE);
    }

    #[test]
    fn timeouts_round_up_and_saturate() {
        assert_eq!(timeout_ms(Duration::ZERO), 0);
        assert_eq!(timeout_ms(Duration::from_nanos(1)), 1);
        assert_eq!(timeout_ms(Duration::from_millis(250)), 250);
        assert_eq!(timeout_ms(Duration::from_micros(1500)), 2);
        assert_eq!(timeout_ms(Duration::MAX), u64::from(u32::MAX));
    }

    #[test]
    fn errors_display_operation_message_and_hint() {
        let plain = XrtError::new(
            ErrorKind::Xrt,
            "open XRT device 0".to_owned(),
            "boom".to_owned(),
        );
        assert_eq!(plain.to_string(), "open XRT device 0: boom");
        let hinted = plain.clone().with_hint("do this");
        assert_eq!(hinted.to_string(), "open XRT device 0: boom (do this)");
        assert_eq!(hinted.message(), "boom");
        assert_eq!(hinted.operation(), "open XRT device 0");
        assert_eq!(hinted.kind(), ErrorKind::Xrt);
    }
}
