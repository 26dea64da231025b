//! Checked calls over [`crate::ffi`]: each turns a shim status into a
//! `Result` and owns the returned handle, freeing it on drop.

use std::ffi::{CStr, CString, c_char, c_int};
use std::path::Path;
use std::ptr::{self, NonNull};

use crate::ffi;
use crate::{ErrorKind, XrtError};

macro_rules! handle {
    ($name:ident, $raw:ty, $free:path) => {
        pub(crate) struct $name(NonNull<$raw>);

        impl $name {
            fn as_ptr(&self) -> *mut $raw {
                self.0.as_ptr()
            }
        }

        impl Drop for $name {
            fn drop(&mut self) {
                // SAFETY: the pointer came from the shim's constructor and is
                // freed exactly once, here.
                unsafe { $free(self.0.as_ptr()) }
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}({:p})", stringify!($name), self.0)
            }
        }

        // SAFETY: the handle wraps a reference-counted XRT object whose
        // operations are internally synchronized; the safe layer requires
        // `&mut` for the operations that write host memory.
        unsafe impl Send for $name {}
        // SAFETY: as above.
        unsafe impl Sync for $name {}
    };
}

handle!(
    DeviceHandle,
    ffi::xrt_shim_device,
    ffi::xrt_shim_device_free
);
handle!(
    XclbinHandle,
    ffi::xrt_shim_xclbin,
    ffi::xrt_shim_xclbin_free
);
handle!(
    HwContextHandle,
    ffi::xrt_shim_hw_context,
    ffi::xrt_shim_hw_context_free
);
handle!(
    KernelHandle,
    ffi::xrt_shim_kernel,
    ffi::xrt_shim_kernel_free
);
handle!(BoHandle, ffi::xrt_shim_bo, ffi::xrt_shim_bo_free);
handle!(RunHandle, ffi::xrt_shim_run, ffi::xrt_shim_run_free);

fn last_error() -> String {
    // SAFETY: the shim always returns a valid NUL-terminated string that
    // stays alive until the next shim call on this thread; it is copied here.
    let message = unsafe { CStr::from_ptr(ffi::xrt_shim_last_error()) };
    message.to_string_lossy().into_owned()
}

fn check(status: c_int, operation: impl Fn() -> String) -> Result<(), XrtError> {
    let kind = match status {
        ffi::XRT_SHIM_OK => return Ok(()),
        ffi::XRT_SHIM_ERR_INVALID => ErrorKind::InvalidInput,
        ffi::XRT_SHIM_ERR_UNSUPPORTED => ErrorKind::Unsupported,
        ffi::XRT_SHIM_ERR_IO => ErrorKind::Io,
        _ => ErrorKind::Xrt,
    };
    Err(XrtError::new(kind, operation(), last_error()))
}

fn created<T>(
    status: c_int,
    out: *mut T,
    operation: impl Fn() -> String,
) -> Result<NonNull<T>, XrtError> {
    check(status, &operation)?;
    NonNull::new(out).ok_or_else(|| {
        XrtError::new(
            ErrorKind::Xrt,
            operation(),
            "the XRT shim reported success but returned no object".to_owned(),
        )
    })
}

fn c_string(text: &str, what: &str, operation: impl Fn() -> String) -> Result<CString, XrtError> {
    CString::new(text).map_err(|_| {
        XrtError::new(
            ErrorKind::InvalidInput,
            operation(),
            format!("the {what} contains a NUL byte; pass it without one"),
        )
    })
}

pub(crate) fn xrt_version() -> Option<&'static str> {
    // SAFETY: the shim returns a pointer to a static NUL-terminated string.
    let version: &'static CStr = unsafe { CStr::from_ptr(ffi::xrt_shim_xrt_version()) };
    version.to_str().ok()
}

pub(crate) fn has_hw_context() -> bool {
    // SAFETY: no arguments, no preconditions.
    unsafe { ffi::xrt_shim_has_hw_context() == 1 }
}

pub(crate) fn require_hw_context() -> Result<(), XrtError> {
    // SAFETY: no arguments, no preconditions.
    let status = unsafe { ffi::xrt_shim_require_hw_context() };
    check(status, || "use an XRT hw_context".to_owned())
}

pub(crate) fn device_open(index: u32) -> Result<DeviceHandle, XrtError> {
    let mut out = ptr::null_mut();
    // SAFETY: `out` is a valid out-pointer.
    let status = unsafe { ffi::xrt_shim_device_open(index, &mut out) };
    created(status, out, || format!("open XRT device {index}")).map(DeviceHandle)
}

pub(crate) fn device_name(device: &DeviceHandle) -> Result<String, XrtError> {
    let operation = || "query the XRT device name".to_owned();
    let mut buf = vec![0u8; 256];
    loop {
        let mut len = 0usize;
        // SAFETY: `buf` is writable for `buf.len()` bytes; `len` is a valid out-pointer.
        let status = unsafe {
            ffi::xrt_shim_device_name(
                device.as_ptr(),
                buf.as_mut_ptr().cast::<c_char>(),
                buf.len(),
                &mut len,
            )
        };
        check(status, operation)?;
        if len <= buf.len() {
            buf.truncate(len);
            return Ok(String::from_utf8_lossy(&buf).into_owned());
        }
        buf.resize(len, 0);
    }
}

pub(crate) fn device_register_xclbin(
    device: &DeviceHandle,
    xclbin: &XclbinHandle,
) -> Result<(), XrtError> {
    // SAFETY: both handles are live.
    let status = unsafe { ffi::xrt_shim_device_register_xclbin(device.as_ptr(), xclbin.as_ptr()) };
    check(status, || {
        "register the xclbin on the XRT device".to_owned()
    })
}

pub(crate) fn xclbin_load_file(path: &Path) -> Result<XclbinHandle, XrtError> {
    let operation = || format!("load xclbin {}", path.display());
    let c_path = path_to_c(path, operation)?;
    let mut out = ptr::null_mut();
    // SAFETY: `c_path` is NUL-terminated; `out` is a valid out-pointer.
    let status = unsafe { ffi::xrt_shim_xclbin_load_file(c_path.as_ptr(), &mut out) };
    created(status, out, operation).map(XclbinHandle)
}

#[cfg(unix)]
fn path_to_c(path: &Path, operation: impl Fn() -> String) -> Result<CString, XrtError> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        XrtError::new(
            ErrorKind::InvalidInput,
            operation(),
            "the path contains a NUL byte; pass a path without one".to_owned(),
        )
    })
}

#[cfg(not(unix))]
fn path_to_c(path: &Path, operation: impl Fn() -> String) -> Result<CString, XrtError> {
    let Some(text) = path.to_str() else {
        return Err(XrtError::new(
            ErrorKind::InvalidInput,
            operation(),
            "the path is not valid Unicode; rename the file".to_owned(),
        ));
    };
    c_string(text, "path", operation)
}

pub(crate) fn xclbin_load_bytes(bytes: &[u8]) -> Result<XclbinHandle, XrtError> {
    let mut out = ptr::null_mut();
    // SAFETY: `bytes` is readable for its length; `out` is a valid out-pointer.
    let status =
        unsafe { ffi::xrt_shim_xclbin_load_bytes(bytes.as_ptr().cast(), bytes.len(), &mut out) };
    created(status, out, || {
        format!("load an xclbin from {} bytes in memory", bytes.len())
    })
    .map(XclbinHandle)
}

pub(crate) fn xclbin_kernel_names(xclbin: &XclbinHandle) -> Result<Vec<String>, XrtError> {
    let operation = || "list the kernels of the xclbin".to_owned();
    let mut count = 0usize;
    // SAFETY: the handle is live; `count` is a valid out-pointer.
    check(
        unsafe { ffi::xrt_shim_xclbin_kernel_count(xclbin.as_ptr(), &mut count) },
        operation,
    )?;
    (0..count)
        .map(|index| {
            let mut name: *const c_char = ptr::null();
            // SAFETY: the handle is live; `name` is a valid out-pointer.
            check(
                unsafe { ffi::xrt_shim_xclbin_kernel_name(xclbin.as_ptr(), index, &mut name) },
                operation,
            )?;
            if name.is_null() {
                return Err(XrtError::new(
                    ErrorKind::Xrt,
                    operation(),
                    "the XRT shim returned no kernel name".to_owned(),
                ));
            }
            // SAFETY: non-null, NUL-terminated, owned by the live handle; copied here.
            Ok(unsafe { CStr::from_ptr(name) }
                .to_string_lossy()
                .into_owned())
        })
        .collect()
}

pub(crate) fn xclbin_uuid(xclbin: &XclbinHandle) -> Result<[u8; 16], XrtError> {
    let mut uuid = [0u8; 16];
    // SAFETY: the handle is live; `uuid` is writable for 16 bytes.
    let status = unsafe { ffi::xrt_shim_xclbin_uuid(xclbin.as_ptr(), uuid.as_mut_ptr()) };
    check(status, || "read the xclbin UUID".to_owned())?;
    Ok(uuid)
}

pub(crate) fn hw_context_create(
    device: &DeviceHandle,
    xclbin: &XclbinHandle,
) -> Result<HwContextHandle, XrtError> {
    let mut out = ptr::null_mut();
    // SAFETY: both handles are live; `out` is a valid out-pointer.
    let status =
        unsafe { ffi::xrt_shim_hw_context_create(device.as_ptr(), xclbin.as_ptr(), &mut out) };
    created(status, out, || "create an XRT hw_context".to_owned()).map(HwContextHandle)
}

pub(crate) fn kernel_open(context: &HwContextHandle, name: &str) -> Result<KernelHandle, XrtError> {
    let operation = || format!("open kernel '{name}'");
    let c_name = c_string(name, "kernel name", operation)?;
    let mut out = ptr::null_mut();
    // SAFETY: the handle is live; `c_name` is NUL-terminated; `out` is a valid out-pointer.
    let status = unsafe { ffi::xrt_shim_kernel_open(context.as_ptr(), c_name.as_ptr(), &mut out) };
    created(status, out, operation).map(KernelHandle)
}

pub(crate) fn kernel_group_id(kernel: &KernelHandle, arg_index: u32) -> Result<u32, XrtError> {
    let operation = || format!("query the memory group of kernel argument {arg_index}");
    let index = c_int::try_from(arg_index).map_err(|_| {
        XrtError::new(
            ErrorKind::InvalidInput,
            operation(),
            format!(
                "argument index {arg_index} is beyond what XRT accepts ({})",
                c_int::MAX
            ),
        )
    })?;
    let mut group: c_int = 0;
    // SAFETY: the handle is live; `group` is a valid out-pointer.
    check(
        unsafe { ffi::xrt_shim_kernel_group_id(kernel.as_ptr(), index, &mut group) },
        operation,
    )?;
    u32::try_from(group).map_err(|_| {
        XrtError::new(
            ErrorKind::Xrt,
            operation(),
            format!("XRT returned the negative memory group {group}"),
        )
    })
}

pub(crate) fn bo_alloc(
    device: &DeviceHandle,
    size: usize,
    flags: u32,
    group: u32,
) -> Result<BoHandle, XrtError> {
    let mut out = ptr::null_mut();
    // SAFETY: the handle is live; `out` is a valid out-pointer.
    let status = unsafe { ffi::xrt_shim_bo_alloc(device.as_ptr(), size, flags, group, &mut out) };
    created(status, out, || {
        format!("allocate a {size}-byte XRT buffer (flags {flags:#x}, memory group {group})")
    })
    .map(BoHandle)
}

pub(crate) fn bo_sub(parent: &BoHandle, size: usize, offset: usize) -> Result<BoHandle, XrtError> {
    let mut out = ptr::null_mut();
    // SAFETY: the handle is live; `out` is a valid out-pointer.
    let status = unsafe { ffi::xrt_shim_bo_sub(parent.as_ptr(), size, offset, &mut out) };
    created(status, out, || {
        format!("make a {size}-byte sub-buffer at offset {offset} of an XRT buffer")
    })
    .map(BoHandle)
}

pub(crate) fn bo_write(bo: &BoHandle, data: &[u8], offset: usize) -> Result<(), XrtError> {
    // SAFETY: the handle is live; `data` is readable for its length.
    let status =
        unsafe { ffi::xrt_shim_bo_write(bo.as_ptr(), data.as_ptr().cast(), data.len(), offset) };
    check(status, || {
        format!(
            "write {} bytes at offset {offset} into an XRT buffer",
            data.len()
        )
    })
}

pub(crate) fn bo_read(bo: &BoHandle, out: &mut [u8], offset: usize) -> Result<(), XrtError> {
    let len = out.len();
    // SAFETY: the handle is live; `out` is writable for its length.
    let status =
        unsafe { ffi::xrt_shim_bo_read(bo.as_ptr(), out.as_mut_ptr().cast(), len, offset) };
    check(status, || {
        format!("read {len} bytes at offset {offset} from an XRT buffer")
    })
}

pub(crate) fn bo_map(bo: &BoHandle) -> Result<NonNull<u8>, XrtError> {
    let mut out = ptr::null_mut();
    // SAFETY: the handle is live; `out` is a valid out-pointer.
    let status = unsafe { ffi::xrt_shim_bo_map(bo.as_ptr(), &mut out) };
    created(status, out, || "map an XRT buffer".to_owned()).map(NonNull::cast)
}

pub(crate) fn bo_sync(
    bo: &BoHandle,
    to_device: bool,
    len: usize,
    offset: usize,
) -> Result<(), XrtError> {
    let direction = if to_device {
        ffi::XRT_SHIM_SYNC_TO_DEVICE
    } else {
        ffi::XRT_SHIM_SYNC_FROM_DEVICE
    };
    // SAFETY: the handle is live.
    let status = unsafe { ffi::xrt_shim_bo_sync(bo.as_ptr(), direction, len, offset) };
    check(status, || {
        let way = if to_device { "to" } else { "from" };
        format!("sync {len} bytes at offset {offset} of an XRT buffer {way} the device")
    })
}

pub(crate) fn kernel_start_npu(
    kernel: &KernelHandle,
    opcode: u64,
    instructions: &BoHandle,
    instruction_count: u32,
    data: &[&BoHandle],
) -> Result<RunHandle, XrtError> {
    let raw: Vec<*const ffi::xrt_shim_bo> =
        data.iter().map(|bo| bo.as_ptr().cast_const()).collect();
    let mut out = ptr::null_mut();
    // SAFETY: all handles are live; `raw` holds `raw.len()` valid pointers;
    // `out` is a valid out-pointer.
    let status = unsafe {
        ffi::xrt_shim_kernel_start_npu(
            kernel.as_ptr(),
            opcode,
            instructions.as_ptr(),
            instruction_count,
            raw.as_ptr(),
            raw.len(),
            &mut out,
        )
    };
    created(status, out, || {
        format!(
            "start the kernel (opcode {opcode}, {instruction_count} instructions, {} data buffers)",
            data.len()
        )
    })
    .map(RunHandle)
}

pub(crate) fn run_wait(run: &RunHandle, timeout_ms: u64) -> Result<i32, XrtError> {
    let mut state: c_int = 0;
    // SAFETY: the handle is live; `state` is a valid out-pointer.
    let status = unsafe { ffi::xrt_shim_run_wait(run.as_ptr(), timeout_ms, &mut state) };
    check(status, || format!("wait for the run ({timeout_ms} ms)"))?;
    Ok(state)
}

pub(crate) fn run_abort(run: &RunHandle) -> Result<i32, XrtError> {
    let mut state: c_int = 0;
    // SAFETY: the handle is live; `state` is a valid out-pointer.
    let status = unsafe { ffi::xrt_shim_run_abort(run.as_ptr(), &mut state) };
    check(status, || "abort the run".to_owned())?;
    Ok(state)
}

pub(crate) fn run_state(run: &RunHandle) -> Result<i32, XrtError> {
    let mut state: c_int = 0;
    // SAFETY: the handle is live; `state` is a valid out-pointer.
    let status = unsafe { ffi::xrt_shim_run_state(run.as_ptr(), &mut state) };
    check(status, || "query the run state".to_owned())?;
    Ok(state)
}
