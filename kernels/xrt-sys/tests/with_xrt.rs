//! Behaviour against the real XRT the crate was built with, on a machine
//! that may have no NPU.
#![cfg(feature = "xrt")]

use std::ffi::{CStr, c_int};
use std::path::PathBuf;
use std::ptr;

use xrt_sys::{Device, ErrorKind, Xclbin, ffi};

/// A fresh directory removed again when the test ends.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("xrt-sys-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Self(dir)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn shim_error() -> String {
    // SAFETY: the shim always returns a valid NUL-terminated string.
    unsafe { CStr::from_ptr(ffi::xrt_shim_last_error()) }
        .to_string_lossy()
        .into_owned()
}

/// A minimal well-framed xclbin header: magic, declared length, one section.
fn framed_xclbin(total_len: usize, sections: u32, section: (u64, u64)) -> Vec<u8> {
    let mut bytes = vec![0u8; total_len];
    bytes[..8].copy_from_slice(b"xclbin2\0");
    bytes[304..312].copy_from_slice(&(total_len as u64).to_le_bytes());
    bytes[448..452].copy_from_slice(&sections.to_le_bytes());
    bytes[456 + 24..456 + 32].copy_from_slice(&section.0.to_le_bytes());
    bytes[456 + 32..456 + 40].copy_from_slice(&section.1.to_le_bytes());
    bytes
}

#[test]
fn version_is_the_one_found_by_the_build() {
    let version = xrt_sys::xrt_version().expect("built with the xrt feature");
    assert_eq!(version, env!("XRT_SHIM_VERSION"));
    assert!(
        version.chars().next().is_some_and(|c| c.is_ascii_digit()),
        "{version}"
    );
    assert_eq!(
        xrt_sys::has_hw_context(),
        env!("XRT_SHIM_HAS_HW_CONTEXT") == "1"
    );
}

#[test]
fn opening_a_device_reports_xrt_own_message() {
    match Device::open(0) {
        Ok(device) => {
            // A machine with a device: the name query must work.
            let name = device.name().expect("device name");
            assert!(!name.is_empty());
        }
        Err(error) => {
            assert_eq!(error.kind(), ErrorKind::Xrt, "{error}");
            assert_eq!(error.operation(), "open XRT device 0");
            assert!(!error.message().trim().is_empty(), "{error:?}");
            assert!(error.hint().is_some());
            // The message is XRT's exception text, not the shim's wording.
            assert!(!error.message().contains("XRT shim"), "{error}");
            // Debian's XRT 2.13 finds its driver layer through XILINX_XRT
            // only, and says so in its own words when the variable is unset.
            if xrt_sys::xrt_version() == Some("2.13.0") && std::env::var_os("XILINX_XRT").is_none()
            {
                assert_eq!(error.message(), "XILINX_XRT not set");
            }
            println!("Device::open(0) -> {error}");
        }
    }
}

#[test]
fn a_missing_xclbin_file_is_an_io_error_naming_the_path() {
    let scratch = Scratch::new("missing");
    let path = scratch.join("no-such-design.xclbin");
    let error = Xclbin::from_file(&path).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Io, "{error}");
    assert!(
        error.message().contains(&*path.to_string_lossy()),
        "{error}"
    );
    assert!(
        error.message().contains("No such file or directory"),
        "{error}"
    );
    assert!(error.operation().contains("no-such-design.xclbin"));
    println!("missing file -> {error}");
}

#[test]
fn a_directory_is_not_an_xclbin() {
    let scratch = Scratch::new("directory");
    let error = Xclbin::from_file(&scratch.0).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Io, "{error}");
    assert!(error.message().contains("Is a directory"), "{error}");
}

#[test]
fn garbage_bytes_are_refused_before_xrt_parses_them() {
    let scratch = Scratch::new("garbage");
    let path = scratch.join("garbage.xclbin");
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&path, &garbage).expect("write garbage");
    let error = Xclbin::from_file(&path).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidInput, "{error}");
    assert!(error.message().contains("not an xclbin"), "{error}");
    println!("garbage file -> {error}");

    let same = Xclbin::from_bytes(&garbage).unwrap_err();
    assert_eq!(same.kind(), ErrorKind::InvalidInput);
    assert_eq!(same.message(), error.message());
}

#[test]
fn an_empty_file_is_refused() {
    // XRT 2.13 itself crashes on an empty xclbin; the shim must refuse it.
    let scratch = Scratch::new("empty");
    let path = scratch.join("empty.xclbin");
    std::fs::write(&path, b"").expect("write empty file");
    let error = Xclbin::from_file(&path).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidInput, "{error}");
    assert!(error.message().contains("not an xclbin"), "{error}");
    assert_eq!(
        Xclbin::from_bytes(&[]).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
}

#[test]
fn a_truncated_xclbin_is_refused() {
    let error = Xclbin::from_bytes(b"xclbin2\0 and then nothing").unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidInput);
    assert!(error.message().contains("truncated xclbin"), "{error}");

    let mut header = framed_xclbin(1024, 1, (496, 16));
    header.truncate(800);
    let error = Xclbin::from_bytes(&header).unwrap_err();
    assert!(
        error.message().contains("declares 1024 bytes but only 800"),
        "{error}"
    );
}

#[test]
fn sections_outside_the_file_are_refused() {
    let error = Xclbin::from_bytes(&framed_xclbin(1024, 1, (1000, 100))).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidInput);
    assert!(error.message().contains("section 0"), "{error}");
    assert!(error.message().contains("outside"), "{error}");

    let error = Xclbin::from_bytes(&framed_xclbin(1024, 1, (u64::MAX, 2))).unwrap_err();
    assert!(error.message().contains("section 0"), "{error}");

    let error = Xclbin::from_bytes(&framed_xclbin(1024, 100, (496, 16))).unwrap_err();
    assert!(error.message().contains("section table"), "{error}");

    let error = Xclbin::from_bytes(&framed_xclbin(1024, 0, (496, 16))).unwrap_err();
    assert!(error.message().contains("0 sections"), "{error}");
}

#[test]
fn a_well_framed_xclbin_reaches_xrt_and_keeps_its_uuid() {
    // Framing is sound, so the shim hands it to XRT. XRT may accept this
    // kernel-less design (2.13 does) or reject it in its own words.
    let uuid: [u8; 16] = std::array::from_fn(|i| 0xA0 + i as u8);
    let mut bytes = framed_xclbin(1024, 1, (496, 16));
    bytes[416..432].copy_from_slice(&uuid);
    let scratch = Scratch::new("framed");
    let path = scratch.join("framed.xclbin");
    std::fs::write(&path, &bytes).expect("write framed xclbin");
    for loaded in [Xclbin::from_bytes(&bytes), Xclbin::from_file(&path)] {
        match loaded {
            Ok(xclbin) => {
                println!("framed header accepted: {xclbin:?}");
                assert_eq!(xclbin.uuid(), uuid);
                assert!(xclbin.kernel_names().is_empty());
                let shared = xclbin.clone();
                drop(xclbin);
                assert_eq!(shared.uuid(), uuid);
            }
            Err(error) => {
                println!("framed header rejected: {error}");
                assert_eq!(error.kind(), ErrorKind::Xrt, "{error}");
            }
        }
    }
}

/// An xclbin whose only section is EMBEDDED_METADATA (kind 2) declaring
/// the given kernels.
fn xclbin_declaring(kernels: &[&str]) -> Vec<u8> {
    let mut xml = String::from(
        r#"<?xml version="1.0" encoding="UTF-8"?><project name="test"><platform><device name="npu"><core name="OCL_REGION_0" target="hw" type="clc_region">"#,
    );
    for name in kernels {
        xml.push_str(&format!(
            r#"<kernel name="{name}" language="c" type="dpu"><arg name="opcode" addressQualifier="0" id="0" port="" size="0x8" offset="0x00" hostOffset="0x0" hostSize="0x8" type="uint64_t"/></kernel>"#
        ));
    }
    xml.push_str("</core></device></platform></project>");
    let total = 496 + xml.len();
    let mut bytes = framed_xclbin(total, 1, (496, xml.len() as u64));
    bytes[456..460].copy_from_slice(&2u32.to_le_bytes());
    bytes[460..476].copy_from_slice(b"EMBEDDED_METADAT");
    bytes[496..].copy_from_slice(xml.as_bytes());
    bytes
}

#[test]
fn kernel_names_come_from_xrt() {
    let loaded = Xclbin::from_bytes(&xclbin_declaring(&["MLIR_AIE", "second_kernel"]));
    match loaded {
        Ok(xclbin) => {
            let mut names = xclbin.kernel_names().to_vec();
            names.sort();
            assert_eq!(names, ["MLIR_AIE", "second_kernel"]);
        }
        // Newer XRTs may want more sections than this minimal design has;
        // 2.13 reads the kernels from the metadata alone.
        Err(error) => {
            assert_ne!(xrt_sys::xrt_version(), Some("2.13.0"), "{error}");
            assert_eq!(error.kind(), ErrorKind::Xrt, "{error}");
        }
    }
}

#[test]
fn hw_context_is_gated_on_the_xrt_version() {
    let version = xrt_sys::xrt_version().expect("built with the xrt feature");
    let gate = xrt_sys::check_hw_context();
    if xrt_sys::has_hw_context() {
        assert_eq!(gate, Ok(()));
    } else {
        let error = gate.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Unsupported);
        let expected =
            format!("this XRT ({version}) has no hw_context: the NPU needs XRT >= 2.17 (amdxdna)");
        assert!(error.message().starts_with(&expected), "{error}");
        assert!(error.message().contains("XILINX_XRT"), "{error}");
        println!("check_hw_context -> {error}");
    }
}

#[test]
fn the_shim_checks_the_hw_context_gate_before_its_arguments() {
    // Null handles: on an XRT without hw_context the gate answers first; with
    // hw_context the null checks answer. Either way nothing is dereferenced.
    let expected = if xrt_sys::has_hw_context() {
        ffi::XRT_SHIM_ERR_INVALID
    } else {
        ffi::XRT_SHIM_ERR_UNSUPPORTED
    };
    let mut context = ptr::null_mut();
    // SAFETY: the shim accepts null handles and reports them.
    let status = unsafe { ffi::xrt_shim_hw_context_create(ptr::null(), ptr::null(), &mut context) };
    assert_eq!(status, expected, "{}", shim_error());
    assert!(context.is_null());
    let gate_message = shim_error();

    let mut kernel = ptr::null_mut();
    // SAFETY: as above; the name is a valid C string.
    let status =
        unsafe { ffi::xrt_shim_kernel_open(ptr::null(), c"MLIR_AIE".as_ptr(), &mut kernel) };
    assert_eq!(status, expected, "{}", shim_error());
    assert!(kernel.is_null());

    // SAFETY: as above.
    let status = unsafe { ffi::xrt_shim_device_register_xclbin(ptr::null(), ptr::null()) };
    assert_eq!(status, expected, "{}", shim_error());

    if !xrt_sys::has_hw_context() {
        assert!(gate_message.contains("has no hw_context"), "{gate_message}");
        assert_eq!(
            gate_message,
            xrt_sys::check_hw_context().unwrap_err().message()
        );
    }
}

#[test]
fn the_shim_refuses_size_zero_and_null_handles() {
    let mut bo = ptr::null_mut();
    // SAFETY: the shim checks the size before the (null) device.
    let status = unsafe {
        ffi::xrt_shim_bo_alloc(ptr::null(), 0, ffi::XRT_SHIM_BO_FLAGS_HOST_ONLY, 0, &mut bo)
    };
    assert_eq!(status, ffi::XRT_SHIM_ERR_INVALID);
    assert!(shim_error().contains("buffer size 0"), "{}", shim_error());
    assert!(bo.is_null());

    // SAFETY: null handles are reported, not dereferenced.
    let status = unsafe {
        ffi::xrt_shim_bo_alloc(
            ptr::null(),
            64,
            ffi::XRT_SHIM_BO_FLAGS_HOST_ONLY,
            0,
            &mut bo,
        )
    };
    assert_eq!(status, ffi::XRT_SHIM_ERR_INVALID);
    assert!(shim_error().contains("null device"), "{}", shim_error());

    let mut size = 0usize;
    let mut state: c_int = 0;
    let mut group: c_int = 0;
    let mut run = ptr::null_mut();
    let mut len = 0usize;
    let data = [ptr::null::<ffi::xrt_shim_bo>()];
    // SAFETY: every call gets a null handle, which the shim must refuse.
    let statuses = unsafe {
        [
            ffi::xrt_shim_bo_size(ptr::null(), &mut size),
            ffi::xrt_shim_bo_write(ptr::null_mut(), ptr::null(), 0, 0),
            ffi::xrt_shim_bo_read(ptr::null(), ptr::null_mut(), 0, 0),
            ffi::xrt_shim_bo_sync(ptr::null_mut(), ffi::XRT_SHIM_SYNC_TO_DEVICE, 0, 0),
            ffi::xrt_shim_bo_map(ptr::null_mut(), &mut ptr::null_mut()),
            ffi::xrt_shim_kernel_group_id(ptr::null(), 0, &mut group),
            ffi::xrt_shim_kernel_start_npu(
                ptr::null(),
                3,
                ptr::null(),
                1,
                data.as_ptr(),
                1,
                &mut run,
            ),
            ffi::xrt_shim_run_wait(ptr::null(), 1, &mut state),
            ffi::xrt_shim_run_state(ptr::null(), &mut state),
            ffi::xrt_shim_run_abort(ptr::null_mut(), &mut state),
            ffi::xrt_shim_device_name(ptr::null(), ptr::null_mut(), 0, &mut len),
            ffi::xrt_shim_xclbin_kernel_count(ptr::null(), &mut size),
            ffi::xrt_shim_xclbin_kernel_name(ptr::null(), 0, &mut ptr::null()),
            ffi::xrt_shim_xclbin_uuid(ptr::null(), [0u8; 16].as_mut_ptr()),
            ffi::xrt_shim_xclbin_load_file(ptr::null(), &mut ptr::null_mut()),
            ffi::xrt_shim_device_open(0, ptr::null_mut()),
        ]
    };
    for (i, status) in statuses.into_iter().enumerate() {
        assert_eq!(
            status,
            ffi::XRT_SHIM_ERR_INVALID,
            "call {i}: {}",
            shim_error()
        );
    }
    assert!(run.is_null());

    // SAFETY: freeing null is a documented no-op.
    unsafe {
        ffi::xrt_shim_device_free(ptr::null_mut());
        ffi::xrt_shim_xclbin_free(ptr::null_mut());
        ffi::xrt_shim_hw_context_free(ptr::null_mut());
        ffi::xrt_shim_kernel_free(ptr::null_mut());
        ffi::xrt_shim_bo_free(ptr::null_mut());
        ffi::xrt_shim_run_free(ptr::null_mut());
    }
}

#[test]
fn errors_are_per_thread() {
    let mut bo = ptr::null_mut();
    // SAFETY: size 0 is refused before the null device is looked at.
    let status = unsafe { ffi::xrt_shim_bo_alloc(ptr::null(), 0, 0, 0, &mut bo) };
    assert_eq!(status, ffi::XRT_SHIM_ERR_INVALID);
    let other = std::thread::spawn(|| {
        let mut out = ptr::null_mut();
        // SAFETY: as in the other tests.
        let status = unsafe { ffi::xrt_shim_xclbin_load_bytes(ptr::null(), 0, &mut out) };
        assert_eq!(status, ffi::XRT_SHIM_ERR_INVALID);
        shim_error()
    })
    .join()
    .expect("thread");
    assert!(other.contains("not an xclbin"), "{other}");
    assert!(shim_error().contains("buffer size 0"), "{}", shim_error());
}
