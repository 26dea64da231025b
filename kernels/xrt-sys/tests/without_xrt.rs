//! Without the `xrt` feature every entry point answers "built without XRT".
#![cfg(not(feature = "xrt"))]

use xrt_sys::{Device, ErrorKind, NOT_BUILT_MESSAGE, Xclbin, XrtError};

fn assert_not_built(error: XrtError, operation: &str) {
    assert_eq!(error.kind(), ErrorKind::NotBuilt);
    assert_eq!(error.message(), NOT_BUILT_MESSAGE);
    assert_eq!(error.operation(), operation);
    assert_eq!(
        error.to_string(),
        format!("{operation}: {NOT_BUILT_MESSAGE}")
    );
}

#[test]
fn the_message_says_how_to_get_xrt_support() {
    assert!(NOT_BUILT_MESSAGE.contains("built without XRT support"));
    assert!(NOT_BUILT_MESSAGE.contains("--features xrt"));
    assert!(NOT_BUILT_MESSAGE.contains("libxrt-dev"));
}

#[test]
fn opening_a_device_is_not_built() {
    assert_not_built(Device::open(0).unwrap_err(), "open XRT device 0");
    assert_not_built(Device::open(7).unwrap_err(), "open XRT device 7");
}

#[test]
fn loading_an_xclbin_is_not_built() {
    // Even a path that does not exist: nothing is read without XRT.
    assert_not_built(
        Xclbin::from_file("/nonexistent/design.xclbin").unwrap_err(),
        "load xclbin /nonexistent/design.xclbin",
    );
    assert_not_built(
        Xclbin::from_bytes(b"xclbin2\0").unwrap_err(),
        "load an xclbin from 8 bytes in memory",
    );
}

#[test]
fn hw_context_is_not_built() {
    assert_not_built(
        xrt_sys::check_hw_context().unwrap_err(),
        "use an XRT hw_context",
    );
    assert!(!xrt_sys::has_hw_context());
}

#[test]
fn there_is_no_xrt_version() {
    assert_eq!(xrt_sys::xrt_version(), None);
}
