//! A shared reference to the device an op dispatches to.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

use amanuensis_kernels::device::Device;

/// The device an op runs on. Two handles are equal when they point at the same device, so
/// that tract's graph machinery (which compares and hashes ops) keeps ops of different
/// devices apart.
#[derive(Clone)]
pub struct DeviceHandle(pub Arc<dyn Device>);

impl DeviceHandle {
    /// A handle on `device`.
    pub fn new(device: Arc<dyn Device>) -> DeviceHandle {
        DeviceHandle(device)
    }
}

impl Deref for DeviceHandle {
    type Target = dyn Device;
    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl fmt::Debug for DeviceHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.prefix())
    }
}

impl PartialEq for DeviceHandle {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for DeviceHandle {}

impl Hash for DeviceHandle {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.0) as *const u8 as usize).hash(state)
    }
}
