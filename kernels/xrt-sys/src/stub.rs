//! Stand-in for the checked calls when the crate is built without the `xrt`
//! feature: every constructor fails with [`ErrorKind::NotBuilt`], and the
//! handle types are uninhabited, so no method on them can ever run.

use std::path::Path;
use std::ptr::NonNull;

use crate::{ErrorKind, NOT_BUILT_MESSAGE, XrtError};

macro_rules! handle {
    ($name:ident) => {
        #[derive(Debug)]
        pub(crate) enum $name {}
    };
}

handle!(DeviceHandle);
handle!(XclbinHandle);
handle!(HwContextHandle);
handle!(KernelHandle);
handle!(BoHandle);
handle!(RunHandle);

fn not_built(operation: String) -> XrtError {
    XrtError::new(ErrorKind::NotBuilt, operation, NOT_BUILT_MESSAGE.to_owned())
}

pub(crate) fn xrt_version() -> Option<&'static str> {
    None
}

pub(crate) fn has_hw_context() -> bool {
    false
}

pub(crate) fn require_hw_context() -> Result<(), XrtError> {
    Err(not_built("use an XRT hw_context".to_owned()))
}

pub(crate) fn device_open(index: u32) -> Result<DeviceHandle, XrtError> {
    Err(not_built(format!("open XRT device {index}")))
}

pub(crate) fn device_name(device: &DeviceHandle) -> Result<String, XrtError> {
    match *device {}
}

pub(crate) fn device_register_xclbin(
    device: &DeviceHandle,
    _xclbin: &XclbinHandle,
) -> Result<(), XrtError> {
    match *device {}
}

pub(crate) fn xclbin_load_file(path: &Path) -> Result<XclbinHandle, XrtError> {
    Err(not_built(format!("load xclbin {}", path.display())))
}

pub(crate) fn xclbin_load_bytes(bytes: &[u8]) -> Result<XclbinHandle, XrtError> {
    Err(not_built(format!(
        "load an xclbin from {} bytes in memory",
        bytes.len()
    )))
}

pub(crate) fn xclbin_kernel_names(xclbin: &XclbinHandle) -> Result<Vec<String>, XrtError> {
    match *xclbin {}
}

pub(crate) fn xclbin_uuid(xclbin: &XclbinHandle) -> Result<[u8; 16], XrtError> {
    match *xclbin {}
}

pub(crate) fn hw_context_create(
    device: &DeviceHandle,
    _xclbin: &XclbinHandle,
) -> Result<HwContextHandle, XrtError> {
    match *device {}
}

pub(crate) fn kernel_open(
    context: &HwContextHandle,
    _name: &str,
) -> Result<KernelHandle, XrtError> {
    match *context {}
}

pub(crate) fn kernel_group_id(kernel: &KernelHandle, _arg_index: u32) -> Result<u32, XrtError> {
    match *kernel {}
}

pub(crate) fn bo_alloc(
    device: &DeviceHandle,
    _size: usize,
    _flags: u32,
    _group: u32,
) -> Result<BoHandle, XrtError> {
    match *device {}
}

pub(crate) fn bo_sub(
    parent: &BoHandle,
    _size: usize,
    _offset: usize,
) -> Result<BoHandle, XrtError> {
    match *parent {}
}

pub(crate) fn bo_write(bo: &BoHandle, _data: &[u8], _offset: usize) -> Result<(), XrtError> {
    match *bo {}
}

pub(crate) fn bo_read(bo: &BoHandle, _out: &mut [u8], _offset: usize) -> Result<(), XrtError> {
    match *bo {}
}

pub(crate) fn bo_map(bo: &BoHandle) -> Result<NonNull<u8>, XrtError> {
    match *bo {}
}

pub(crate) fn bo_sync(
    bo: &BoHandle,
    _to_device: bool,
    _len: usize,
    _offset: usize,
) -> Result<(), XrtError> {
    match *bo {}
}

pub(crate) fn kernel_start_npu(
    kernel: &KernelHandle,
    _opcode: u64,
    _instructions: &BoHandle,
    _instruction_count: u32,
    _data: &[&BoHandle],
) -> Result<RunHandle, XrtError> {
    match *kernel {}
}

pub(crate) fn run_wait(run: &RunHandle, _timeout_ms: u64) -> Result<i32, XrtError> {
    match *run {}
}

pub(crate) fn run_abort(run: &RunHandle) -> Result<i32, XrtError> {
    match *run {}
}

pub(crate) fn run_state(run: &RunHandle) -> Result<i32, XrtError> {
    match *run {}
}
