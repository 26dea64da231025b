//! Where the encoder runs: the backends and the choice between them.

use std::sync::Arc;

use amanuensis_kernels::cpu::CpuDevice;
use amanuensis_kernels::device::KernelNeed;
use amanuensis_kernels::emulator::Emulator;
use amanuensis_kernels::gemm::GemmContract;
use amanuensis_kernels::manifest::Manifest;
use amanuensis_kernels::npu::Npu;
use amanuensis_ops::DeviceHandle;
use tract_onnx::prelude::TypedModel;

use crate::placement::{Placement, kernel_needs, placement};
use crate::precision::{OpPrecision, PrecisionDevices, PrecisionPlan};
use crate::rewrite::{OffloadError, Stage, offload, offload_with};

/// A backend as the user names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// tract's optimised plan, untouched: the reference that the CPU fusions are checked
    /// against.
    Tract,
    /// Every op on the CPU: the plan of the NPU rewrite with this project's float32 CPU
    /// kernels (packed GEMMs with fused bias and GELU, blocked attention, fused LayerNorm).
    Cpu,
    /// The NPU plan with the NPU kernels emulated on the CPU, with their exact numerics.
    Emu,
    /// The NPU plan on an XDNA device through XRT.
    Npu,
    /// `npu` when a device and its kernels are found, else `cpu`.
    Auto,
}

amanuensis_kernels::named_variants!(Backend {
    Tract => "tract",
    Cpu => "cpu",
    Emu => "emu",
    Npu => "npu",
    Auto => "auto",
});

pub use amanuensis_kernels::bf16::Rounding;
pub use amanuensis_kernels::gemm::Precision;
pub use amanuensis_kernels::hw::DeviceFamily;

/// How the NPU kernels compute, and for which device family: what `emu` emulates and `npu`
/// must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Kernels {
    /// How operands round to bfloat16.
    pub rounding: Rounding,
    /// bfloat16 products per float32 product.
    pub precision: Precision,
    /// The family (`None`: the NPU's own for `npu`, XDNA1 for `emu`).
    pub family: Option<DeviceFamily>,
}

impl Kernels {
    /// The contract of these kernels on `family`.
    pub fn contract(&self, family: DeviceFamily) -> GemmContract {
        GemmContract::for_family(family)
            .with_rounding(self.rounding)
            .with_precision(self.precision)
    }
}

/// Why a backend cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// No NPU can be driven here.
    #[error(
        "the npu backend is not available: {0}. Use --backend emu to run the NPU plan's exact \
         numerics on the CPU, or --backend cpu; `amanuensis doctor` says what is missing"
    )]
    NoNpu(String),
    /// `auto` would have fallen back, and `--strict` forbids it.
    #[error("--strict: {0}")]
    Strict(String),
}

/// A backend resolved to what runs: the plan's rewrite stages and the device, if any.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The backend that runs (never `Auto`).
    pub backend: Backend,
    /// The device the offloaded ops dispatch to (`emu` and `npu`).
    pub device: Option<DeviceHandle>,
    /// What `auto` chose and why, for a one-line message.
    pub note: Option<String>,
}

impl Resolved {
    /// The rewrite stages of this backend's plan.
    pub fn stages(&self) -> &'static [Stage] {
        match self.backend {
            Backend::Tract => &[],
            _ => &[Stage::Cpu, Stage::Device],
        }
    }

    /// The `cpu` backend: the CPU device.
    pub fn cpu(note: Option<String>) -> Resolved {
        Resolved {
            backend: Backend::Cpu,
            device: Some(cpu_device()),
            note,
        }
    }
}

/// The CPU as the device of the `cpu` plan ([`CpuDevice`]).
pub fn cpu_device() -> DeviceHandle {
    DeviceHandle::new(Arc::new(CpuDevice::new()))
}

/// Opens the first NPU with the kernels found on the manifest search path, or says why not:
/// its family is the device's own (it must be `kernels.family` when that is given).
pub fn open_npu(kernels: Kernels) -> Result<DeviceHandle, String> {
    xrt_sys::check_hw_context().map_err(|e| e.to_string())?;
    let name = xrt_sys::Device::open(0)
        .and_then(|d| d.name())
        .map_err(|e| e.to_string())?;
    let family = DeviceFamily::from_device_name(&name);
    if let Some(asked) = kernels.family
        && asked != family
    {
        return Err(format!(
            "--device-family {} was given, but NPU 0 ({name}) is {}",
            asked.name(),
            family.name()
        ));
    }
    let manifest = Manifest::find().map_err(|e| e.to_string())?;
    let npu = Npu::open(0, manifest, kernels.contract(family)).map_err(|e| e.to_string())?;
    Ok(DeviceHandle::new(Arc::new(npu)))
}

/// [`resolve`], or with `device` (another implementation of the kernel contract) when given:
/// `emu`, `npu` and `auto` then run on it (`auto` as `npu`, falling back as it does), `tract`
/// and `cpu` ignore it.
pub fn resolve_with(
    device: Option<&DeviceHandle>,
    backend: Backend,
    strict: bool,
    kernels: Kernels,
) -> Result<Resolved, BackendError> {
    match (device, backend) {
        (Some(device), Backend::Emu | Backend::Npu | Backend::Auto) => Ok(Resolved {
            backend: if backend == Backend::Auto {
                Backend::Npu
            } else {
                backend
            },
            device: Some(device.clone()),
            note: None,
        }),
        _ => resolve(backend, strict, kernels),
    }
}

/// Resolves `backend` with `kernels`; with `strict`, `auto` must find the NPU.
pub fn resolve(backend: Backend, strict: bool, kernels: Kernels) -> Result<Resolved, BackendError> {
    let plain = |backend| Resolved {
        backend,
        device: None,
        note: None,
    };
    match backend {
        Backend::Tract => Ok(plain(backend)),
        Backend::Cpu => Ok(Resolved::cpu(None)),
        Backend::Emu => Ok(Resolved {
            backend,
            device: Some(DeviceHandle::new(Arc::new(Emulator::new(
                kernels.contract(kernels.family.unwrap_or(DeviceFamily::Xdna1)),
            )))),
            note: None,
        }),
        Backend::Npu => Ok(Resolved {
            backend,
            device: Some(open_npu(kernels).map_err(BackendError::NoNpu)?),
            note: None,
        }),
        Backend::Auto => {
            let why = match open_npu(kernels) {
                Ok(device) => {
                    return Ok(Resolved {
                        backend: Backend::Npu,
                        device: Some(device),
                        note: Some("backend auto: npu".into()),
                    });
                }
                Err(why) => why,
            };
            if strict {
                return Err(BackendError::Strict(format!(
                    "--backend auto found no NPU ({why})"
                )));
            }
            Ok(Resolved::cpu(Some(format!("backend auto: cpu ({why})"))))
        }
    }
}

/// The devices `plan` sends ops to, beside `resolved`'s: `bf16x3` on the same kind of device
/// (another emulator, or the NPU opened again with that contract's kernels) and float32 on the
/// host. `None` when the plan runs nothing on a device (`tract`, `cpu`). A device given by
/// the caller runs one contract, so a plan of it may not ask for the other.
pub fn precision_devices(
    resolved: &Resolved,
    kernels: Kernels,
    given: bool,
    plan: &PrecisionPlan,
) -> Result<Option<PrecisionDevices>, BackendError> {
    let Some(device) = resolved.device.clone().filter(|d| !d.is_cpu()) else {
        return Ok(None);
    };
    let other = |precision: Precision| -> Result<Option<DeviceHandle>, BackendError> {
        let wanted = match precision {
            Precision::Bf16x3 => OpPrecision::Bf16x3,
            _ => OpPrecision::Bf16Host,
        };
        if !plan.uses(wanted) {
            return Ok(None);
        }
        if given {
            return Err(BackendError::NoNpu(format!(
                "the precision plan {plan} asks for {precision}, and the device given runs one \
                 contract ({})",
                device.contract().precision
            )));
        }
        let kernels = Kernels {
            precision,
            ..kernels
        };
        Ok(Some(match resolved.backend {
            Backend::Emu => DeviceHandle::new(Arc::new(Emulator::new(
                kernels.contract(kernels.family.unwrap_or(DeviceFamily::Xdna1)),
            ))),
            _ => open_npu(kernels).map_err(BackendError::NoNpu)?,
        }))
    };
    let (bf16x3, bf16_host) = (other(Precision::Bf16x3)?, other(Precision::Bf16Host)?);
    Ok(Some(PrecisionDevices {
        bf16: device,
        bf16x3,
        bf16_host,
        f32: cpu_device(),
    }))
}

/// A rewritten model ready to optimise, with what was decided on the way.
pub struct DevicePlan {
    /// The rewritten model, its weights uploaded.
    pub model: TypedModel,
    /// The backend that runs it (the CPU when `auto` fell back).
    pub resolved: Resolved,
    /// Which op runs where.
    pub placement: Placement,
    /// The device kernels the plan dispatches to.
    pub needs: Vec<KernelNeed>,
    /// Under `auto` without `--strict`, when the device runs the plan: the CPU plan's model,
    /// for re-encoding a window whose device run fails.
    pub fallback: Option<TypedModel>,
}

/// Why a plan could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The backend cannot run this plan (and may not fall back).
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// tract failed at `stage`.
    #[error("{stage}: {detail}")]
    Tract {
        /// What was being done.
        stage: &'static str,
        /// tract's error, with its causes.
        detail: String,
    },
}

/// [`offload`]'s rewrite failing is tract's error at the rewriting stage.
fn rewrite_failed(detail: String) -> PlanError {
    PlanError::Tract {
        stage: "rewriting for the backend",
        detail,
    }
}

/// The CPU plan of `model`, uploaded (the CPU device packs the weights).
fn cpu_plan(model: TypedModel, note: Option<String>) -> Result<DevicePlan, PlanError> {
    let resolved = Resolved::cpu(note);
    let device = resolved
        .device
        .clone()
        .expect("the cpu backend has a device");
    let (model, placement) = offload(model, device).map_err(|e| match e {
        OffloadError::Rewrite(detail) => rewrite_failed(detail),
        OffloadError::Device(detail) => PlanError::Tract {
            stage: "packing the weights",
            detail,
        },
    })?;
    Ok(DevicePlan {
        needs: kernel_needs(&model),
        model,
        resolved,
        placement,
        fallback: None,
    })
}

/// The plan of `model` (decluttered, concrete) on `resolved`, which `requested` named.
///
/// The falling back lives here, once: the device's plan is built without side effects,
/// checked against the device's kernels, and uploaded only then. Under `auto` a device that
/// lacks a kernel, or fails to take the weights, gives the CPU plan, with a note naming why;
/// with `strict` that is an error, as it is for `npu` and `emu` themselves.
pub fn plan(
    model: TypedModel,
    requested: Backend,
    strict: bool,
    resolved: Resolved,
    precision: Option<(&PrecisionPlan, &PrecisionDevices)>,
) -> Result<DevicePlan, PlanError> {
    if resolved.backend == Backend::Cpu {
        return cpu_plan(model, resolved.note);
    }
    let Some(device) = resolved.device.clone() else {
        // tract's own plan: nothing rewritten, nothing on a device.
        return Ok(DevicePlan {
            placement: placement(&model, &Default::default()),
            model,
            resolved,
            needs: Vec::new(),
            fallback: None,
        });
    };
    let original = (requested == Backend::Auto).then(|| model.clone());
    let (rewritten, placement) = match offload_with(model, device, precision) {
        Ok(plan) => plan,
        Err(OffloadError::Rewrite(detail)) => return Err(rewrite_failed(detail)),
        Err(OffloadError::Device(why)) => {
            return match original {
                Some(original) if !strict => {
                    cpu_plan(original, Some(format!("backend auto: cpu ({why})")))
                }
                Some(_) => Err(BackendError::Strict(format!(
                    "--backend auto found an NPU but cannot run this model on it ({why})"
                ))
                .into()),
                None => Err(BackendError::NoNpu(why).into()),
            };
        }
    };
    let fallback = match original.filter(|_| !strict) {
        Some(original) => Some(cpu_plan(original, None)?.model),
        None => None,
    };
    Ok(DevicePlan {
        needs: kernel_needs(&rewritten),
        model: rewritten,
        resolved,
        placement,
        fallback,
    })
}
