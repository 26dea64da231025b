//! Raw declarations of the C shim in `shim/xrt_shim.h`.
//!
//! Every function returning `c_int` returns [`XRT_SHIM_OK`] on success or one
//! of the `XRT_SHIM_ERR_*` codes; after a failure [`xrt_shim_last_error`]
//! holds the message until the next shim call on the same thread. Objects are
//! returned through out-pointers left untouched on failure, and are freed
//! with the matching `*_free` function (which accepts null).

#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_int, c_uint, c_void};

/// Success.
pub const XRT_SHIM_OK: c_int = 0;
/// XRT threw; the message is XRT's own.
pub const XRT_SHIM_ERR_XRT: c_int = 1;
/// The caller passed something unusable; nothing reached XRT.
pub const XRT_SHIM_ERR_INVALID: c_int = 2;
/// The XRT the shim was compiled against lacks the feature.
pub const XRT_SHIM_ERR_UNSUPPORTED: c_int = 3;
/// Reading a file failed.
pub const XRT_SHIM_ERR_IO: c_int = 4;

/// No buffer flags (XRT's `XCL_BO_FLAGS_NONE`).
pub const XRT_SHIM_BO_FLAGS_NONE: u32 = 0;
/// XRT's `XCL_BO_FLAGS_CACHEABLE`.
pub const XRT_SHIM_BO_FLAGS_CACHEABLE: u32 = 1 << 24;
/// XRT's `XRT_BO_FLAGS_HOST_ONLY`.
pub const XRT_SHIM_BO_FLAGS_HOST_ONLY: u32 = 1 << 29;

/// XRT's `XCL_BO_SYNC_BO_TO_DEVICE`.
pub const XRT_SHIM_SYNC_TO_DEVICE: c_int = 0;
/// XRT's `XCL_BO_SYNC_BO_FROM_DEVICE`.
pub const XRT_SHIM_SYNC_FROM_DEVICE: c_int = 1;

/// XRT's `ERT_CMD_STATE_NEW`.
pub const XRT_SHIM_CMD_STATE_NEW: c_int = 1;
/// XRT's `ERT_CMD_STATE_QUEUED`.
pub const XRT_SHIM_CMD_STATE_QUEUED: c_int = 2;
/// XRT's `ERT_CMD_STATE_RUNNING`.
pub const XRT_SHIM_CMD_STATE_RUNNING: c_int = 3;
/// XRT's `ERT_CMD_STATE_COMPLETED`.
pub const XRT_SHIM_CMD_STATE_COMPLETED: c_int = 4;
/// XRT's `ERT_CMD_STATE_ERROR`.
pub const XRT_SHIM_CMD_STATE_ERROR: c_int = 5;
/// XRT's `ERT_CMD_STATE_ABORT`.
pub const XRT_SHIM_CMD_STATE_ABORT: c_int = 6;
/// XRT's `ERT_CMD_STATE_SUBMITTED`.
pub const XRT_SHIM_CMD_STATE_SUBMITTED: c_int = 7;
/// XRT's `ERT_CMD_STATE_TIMEOUT`.
pub const XRT_SHIM_CMD_STATE_TIMEOUT: c_int = 8;
/// XRT's `ERT_CMD_STATE_NORESPONSE`.
pub const XRT_SHIM_CMD_STATE_NORESPONSE: c_int = 9;
/// XRT's `ERT_CMD_STATE_SKERROR`.
pub const XRT_SHIM_CMD_STATE_SKERROR: c_int = 10;
/// XRT's `ERT_CMD_STATE_SKCRASHED`.
pub const XRT_SHIM_CMD_STATE_SKCRASHED: c_int = 11;

/// Most data buffers [`xrt_shim_kernel_start_npu`] accepts.
pub const XRT_SHIM_MAX_DATA_BOS: usize = 5;

/// Opaque `xrt::device` handle.
#[repr(C)]
pub struct xrt_shim_device {
    _opaque: [u8; 0],
}

/// Opaque `xrt::xclbin` handle.
#[repr(C)]
pub struct xrt_shim_xclbin {
    _opaque: [u8; 0],
}

/// Opaque `xrt::hw_context` handle.
#[repr(C)]
pub struct xrt_shim_hw_context {
    _opaque: [u8; 0],
}

/// Opaque `xrt::kernel` handle.
#[repr(C)]
pub struct xrt_shim_kernel {
    _opaque: [u8; 0],
}

/// Opaque `xrt::bo` handle.
#[repr(C)]
pub struct xrt_shim_bo {
    _opaque: [u8; 0],
}

/// Opaque `xrt::run` handle.
#[repr(C)]
pub struct xrt_shim_run {
    _opaque: [u8; 0],
}

unsafe extern "C" {
    /// Message of the last failed call on this thread (never null).
    pub fn xrt_shim_last_error() -> *const c_char;
    /// XRT version the shim was compiled against (static, never null).
    pub fn xrt_shim_xrt_version() -> *const c_char;
    /// 1 if compiled with `xrt::hw_context`, else 0.
    pub fn xrt_shim_has_hw_context() -> c_int;
    /// OK, or `XRT_SHIM_ERR_UNSUPPORTED` with the reason.
    pub fn xrt_shim_require_hw_context() -> c_int;

    /// Opens `xrt::device(index)`.
    pub fn xrt_shim_device_open(index: c_uint, out: *mut *mut xrt_shim_device) -> c_int;
    /// Frees a device handle (null allowed).
    pub fn xrt_shim_device_free(device: *mut xrt_shim_device);
    /// Copies up to `cap` bytes of the name (no NUL) and stores its full length.
    pub fn xrt_shim_device_name(
        device: *const xrt_shim_device,
        buf: *mut c_char,
        cap: usize,
        len: *mut usize,
    ) -> c_int;
    /// `device.register_xclbin(xclbin)`; gated on hw_context support first.
    pub fn xrt_shim_device_register_xclbin(
        device: *const xrt_shim_device,
        xclbin: *const xrt_shim_xclbin,
    ) -> c_int;

    /// Reads and checks an xclbin file, then hands it to `xrt::xclbin`.
    pub fn xrt_shim_xclbin_load_file(path: *const c_char, out: *mut *mut xrt_shim_xclbin) -> c_int;
    /// Checks an in-memory xclbin, then hands it to `xrt::xclbin`.
    pub fn xrt_shim_xclbin_load_bytes(
        data: *const c_void,
        len: usize,
        out: *mut *mut xrt_shim_xclbin,
    ) -> c_int;
    /// Frees an xclbin handle (null allowed).
    pub fn xrt_shim_xclbin_free(xclbin: *mut xrt_shim_xclbin);
    /// Number of kernels in the xclbin.
    pub fn xrt_shim_xclbin_kernel_count(xclbin: *const xrt_shim_xclbin, out: *mut usize) -> c_int;
    /// Kernel name at `index`; the string lives as long as the handle.
    pub fn xrt_shim_xclbin_kernel_name(
        xclbin: *const xrt_shim_xclbin,
        index: usize,
        out: *mut *const c_char,
    ) -> c_int;
    /// The xclbin's 16-byte UUID.
    pub fn xrt_shim_xclbin_uuid(xclbin: *const xrt_shim_xclbin, out: *mut u8) -> c_int;

    /// `xrt::hw_context(device, xclbin.get_uuid())`; gated on hw_context support first.
    pub fn xrt_shim_hw_context_create(
        device: *const xrt_shim_device,
        xclbin: *const xrt_shim_xclbin,
        out: *mut *mut xrt_shim_hw_context,
    ) -> c_int;
    /// Frees a hw_context handle (null allowed).
    pub fn xrt_shim_hw_context_free(context: *mut xrt_shim_hw_context);

    /// `xrt::kernel(context, name)`; gated on hw_context support first.
    pub fn xrt_shim_kernel_open(
        context: *const xrt_shim_hw_context,
        name: *const c_char,
        out: *mut *mut xrt_shim_kernel,
    ) -> c_int;
    /// Frees a kernel handle (null allowed).
    pub fn xrt_shim_kernel_free(kernel: *mut xrt_shim_kernel);
    /// `kernel.group_id(arg_index)`.
    pub fn xrt_shim_kernel_group_id(
        kernel: *const xrt_shim_kernel,
        arg_index: c_int,
        out: *mut c_int,
    ) -> c_int;

    /// `xrt::bo(device, size, flags, group)`; size 0 is refused.
    pub fn xrt_shim_bo_alloc(
        device: *const xrt_shim_device,
        size: usize,
        flags: u32,
        group: u32,
        out: *mut *mut xrt_shim_bo,
    ) -> c_int;
    /// `xrt::bo(parent, size, offset)`: a sub-buffer sharing the parent's memory.
    pub fn xrt_shim_bo_sub(
        parent: *const xrt_shim_bo,
        size: usize,
        offset: usize,
        out: *mut *mut xrt_shim_bo,
    ) -> c_int;
    /// Frees a buffer handle (null allowed).
    pub fn xrt_shim_bo_free(bo: *mut xrt_shim_bo);
    /// Size in bytes.
    pub fn xrt_shim_bo_size(bo: *const xrt_shim_bo, out: *mut usize) -> c_int;
    /// Copies `len` bytes from `src` into the buffer at `offset`.
    pub fn xrt_shim_bo_write(
        bo: *mut xrt_shim_bo,
        src: *const c_void,
        len: usize,
        offset: usize,
    ) -> c_int;
    /// Copies `len` bytes at `offset` out of the buffer into `dst`.
    pub fn xrt_shim_bo_read(
        bo: *const xrt_shim_bo,
        dst: *mut c_void,
        len: usize,
        offset: usize,
    ) -> c_int;
    /// Host address of the buffer.
    pub fn xrt_shim_bo_map(bo: *mut xrt_shim_bo, out: *mut *mut c_void) -> c_int;
    /// `bo.sync(direction, len, offset)`.
    pub fn xrt_shim_bo_sync(
        bo: *mut xrt_shim_bo,
        direction: c_int,
        len: usize,
        offset: usize,
    ) -> c_int;

    /// `kernel(opcode, instructions, instruction_count, data[0..n_data])`, 1 <= n_data <= 5.
    pub fn xrt_shim_kernel_start_npu(
        kernel: *const xrt_shim_kernel,
        opcode: u64,
        instructions: *const xrt_shim_bo,
        instruction_count: u32,
        data: *const *const xrt_shim_bo,
        n_data: usize,
        out: *mut *mut xrt_shim_run,
    ) -> c_int;
    /// `run.wait(timeout_ms)` (0: no limit); stores the command state.
    pub fn xrt_shim_run_wait(run: *const xrt_shim_run, timeout_ms: u64, state: *mut c_int)
    -> c_int;
    /// `run.state()`.
    pub fn xrt_shim_run_state(run: *const xrt_shim_run, state: *mut c_int) -> c_int;
    /// `run.abort()` (synchronous); stores the state the command ended in.
    pub fn xrt_shim_run_abort(run: *mut xrt_shim_run, state: *mut c_int) -> c_int;
    /// Frees a run handle (null allowed).
    pub fn xrt_shim_run_free(run: *mut xrt_shim_run);
}
