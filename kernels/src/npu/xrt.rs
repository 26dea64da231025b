//! The part of XRT that [`super::Npu`] uses, as a trait: XRT itself ([`Native`], through
//! `xrt-sys`) in every build, and whatever a test puts below the host code to run it without
//! an NPU.
//!
//! The calls are those of AMD's NPU host flow and nothing more: open a device, register an
//! xclbin, create a hardware context, open a kernel in it, allocate buffers (and sub-buffers)
//! in the memory group of a kernel argument, write, sync to the device, run the kernel with
//! an instruction stream and data buffers and wait, sync back, read. Errors are already
//! [`DeviceError`]s: [`DeviceError::Unavailable`] for what makes the device unusable (no
//! device, a bad xclbin), [`DeviceError::Run`] for a failed call.

use std::path::Path;
use std::time::Duration;

pub use xrt_sys::{BoFlags, CommandState};

use crate::device::DeviceError;

/// The XRT calls of the NPU host flow.
pub trait Xrt: Send + Sync + 'static {
    /// An opened device.
    type Device: Send + Sync;
    /// A registered xclbin.
    type Xclbin: Send + Sync;
    /// A hardware context: an xclbin loaded on the device's array.
    type Context: Send + Sync;
    /// A kernel opened in a context (holding the context alive).
    type Kernel: Send + Sync;
    /// A buffer object, or a sub-buffer of one.
    type Bo: Send + Sync;

    /// Opens device `index`: fails when there is none, or when this XRT cannot drive an NPU.
    fn open(&self, index: u32) -> Result<Self::Device, DeviceError>;

    /// The device's name as XRT reports it (`RyzenAI-npu1`, `NPU Strix`, ...).
    fn device_name(&self, device: &Self::Device) -> String;

    /// Reads the xclbin at `path` and registers it with `device`.
    fn load_xclbin(&self, device: &Self::Device, path: &Path) -> Result<Self::Xclbin, DeviceError>;

    /// Creates a hardware context for `xclbin`: fails when the driver's budget of contexts
    /// is spent.
    fn create_context(
        &self,
        device: &Self::Device,
        xclbin: &Self::Xclbin,
    ) -> Result<Self::Context, DeviceError>;

    /// Opens kernel `name` of the context's xclbin.
    fn open_kernel(&self, context: &Self::Context, name: &str)
    -> Result<Self::Kernel, DeviceError>;

    /// Allocates `bytes` in the memory group of `kernel`'s argument `arg`.
    fn alloc(
        &self,
        device: &Self::Device,
        kernel: &Self::Kernel,
        arg: u32,
        bytes: usize,
        flags: BoFlags,
    ) -> Result<Self::Bo, DeviceError>;

    /// A buffer over `bytes` of `bo` from `offset`, sharing its memory.
    fn sub(&self, bo: &Self::Bo, offset: usize, bytes: usize) -> Result<Self::Bo, DeviceError>;

    /// The buffer's size in bytes.
    fn size(&self, bo: &Self::Bo) -> usize;

    /// Writes `data` into the buffer's host copy at `offset`.
    fn write(&self, bo: &mut Self::Bo, data: &[u8], offset: usize) -> Result<(), DeviceError>;

    /// Reads the buffer's host copy from `offset` into `out`.
    fn read(&self, bo: &Self::Bo, out: &mut [u8], offset: usize) -> Result<(), DeviceError>;

    /// Makes the host copy visible to the device.
    fn sync_to_device(&self, bo: &Self::Bo) -> Result<(), DeviceError>;

    /// Makes what the device wrote visible to the host copy.
    fn sync_from_device(&self, bo: &mut Self::Bo) -> Result<(), DeviceError>;

    /// Starts `kernel` with the NPU flow's arguments (opcode 3, the instruction buffer and
    /// its word count, the data buffers in argument order) and waits up to `timeout` for it:
    /// the state it is in then. A run that has not finished by then is aborted.
    fn run(
        &self,
        kernel: &Self::Kernel,
        instructions: &Self::Bo,
        words: u32,
        data: &[&Self::Bo],
        timeout: Duration,
    ) -> Result<CommandState, DeviceError>;
}

fn run_error(e: xrt_sys::XrtError) -> DeviceError {
    DeviceError::Run(e.to_string())
}

fn unavailable(e: xrt_sys::XrtError) -> DeviceError {
    DeviceError::Unavailable(e.to_string())
}

/// XRT itself (`xrt-sys`; without its `xrt` feature every device fails to open).
#[derive(Debug, Clone, Copy, Default)]
pub struct Native;

/// A kernel of [`Native`]: XRT's kernel object (which holds its context).
pub struct NativeKernel(xrt_sys::Kernel);

impl Xrt for Native {
    type Device = xrt_sys::Device;
    type Xclbin = xrt_sys::Xclbin;
    type Context = xrt_sys::HwContext;
    type Kernel = NativeKernel;
    type Bo = xrt_sys::Bo;

    fn open(&self, index: u32) -> Result<Self::Device, DeviceError> {
        xrt_sys::check_hw_context().map_err(unavailable)?;
        xrt_sys::Device::open(index).map_err(unavailable)
    }

    fn device_name(&self, device: &Self::Device) -> String {
        device.name().unwrap_or_default()
    }

    fn load_xclbin(&self, device: &Self::Device, path: &Path) -> Result<Self::Xclbin, DeviceError> {
        let xclbin = xrt_sys::Xclbin::from_file(path).map_err(unavailable)?;
        device.register_xclbin(&xclbin).map_err(unavailable)?;
        Ok(xclbin)
    }

    fn create_context(
        &self,
        device: &Self::Device,
        xclbin: &Self::Xclbin,
    ) -> Result<Self::Context, DeviceError> {
        xrt_sys::HwContext::new(device, xclbin).map_err(run_error)
    }

    fn open_kernel(
        &self,
        context: &Self::Context,
        name: &str,
    ) -> Result<Self::Kernel, DeviceError> {
        xrt_sys::Kernel::new(context, name)
            .map(NativeKernel)
            .map_err(run_error)
    }

    fn alloc(
        &self,
        device: &Self::Device,
        kernel: &Self::Kernel,
        arg: u32,
        bytes: usize,
        flags: BoFlags,
    ) -> Result<Self::Bo, DeviceError> {
        let group = kernel.0.group_id(arg).map_err(run_error)?;
        xrt_sys::Bo::new(device, bytes, flags, group).map_err(run_error)
    }

    fn sub(&self, bo: &Self::Bo, offset: usize, bytes: usize) -> Result<Self::Bo, DeviceError> {
        bo.sub(offset, bytes).map_err(run_error)
    }

    fn size(&self, bo: &Self::Bo) -> usize {
        bo.size()
    }

    fn write(&self, bo: &mut Self::Bo, data: &[u8], offset: usize) -> Result<(), DeviceError> {
        bo.write(data, offset).map_err(run_error)
    }

    fn read(&self, bo: &Self::Bo, out: &mut [u8], offset: usize) -> Result<(), DeviceError> {
        bo.read(out, offset).map_err(run_error)
    }

    fn sync_to_device(&self, bo: &Self::Bo) -> Result<(), DeviceError> {
        bo.sync_to_device().map_err(run_error)
    }

    fn sync_from_device(&self, bo: &mut Self::Bo) -> Result<(), DeviceError> {
        bo.sync_from_device().map_err(run_error)
    }

    fn run(
        &self,
        kernel: &Self::Kernel,
        instructions: &Self::Bo,
        words: u32,
        data: &[&Self::Bo],
        timeout: Duration,
    ) -> Result<CommandState, DeviceError> {
        let mut run = kernel
            .0
            .start_npu(instructions, words, data)
            .map_err(run_error)?;
        let state = run.wait(timeout).map_err(run_error)?;
        if !state.is_finished() {
            // Out of time: XRT leaves the abort to the caller, and a command left with
            // the device would hold its buffers and the context. The timeout is what the
            // caller reports, whatever state the abort ends in.
            let _ = run.abort();
        }
        Ok(state)
    }
}
