use anyhow::Result;
use clap::Args;

use amanuensis::backend::{Backend, Kernels, resolve};
use amanuensis_kernels::manifest::{FileCheck, Manifest};

/// Say what this machine offers the NPU backend: XRT, NPU devices, kernels, and which
/// backend `auto` would pick and why.
///
/// Run it before blaming the tool: every line names what was found or what is missing.
#[derive(Debug, Args)]
pub struct DoctorArgs {}

pub fn run(_args: DoctorArgs) -> Result<()> {
    println!("amanuensis {}", env!("CARGO_PKG_VERSION"));
    match xrt_sys::xrt_version() {
        None => println!(
            "XRT: not built in: this amanuensis was built without the `xrt` feature (rebuild \
             with `cargo build --release --features xrt`, which needs XRT installed)"
        ),
        Some(version) => {
            let npu = if xrt_sys::has_hw_context() {
                "has hw_context: can drive an NPU".to_string()
            } else {
                "no hw_context: this XRT cannot drive an NPU; XRT >= 2.17 with the amdxdna \
                 driver is needed"
                    .to_string()
            };
            println!("XRT: {version} (the version built against); {npu}");
        }
    }
    match xrt_sys::Device::open(0) {
        Ok(device) => {
            let name = device
                .name()
                .unwrap_or_else(|e| format!("(name unknown: {e})"));
            let family = amanuensis_kernels::hw::DeviceFamily::from_device_name(&name);
            println!(
                "NPU devices: device 0: {name}: {} (kernels for mlir-aie target {})",
                family.name(),
                family.target()
            );
        }
        Err(e) => println!("NPU devices: none ({e})"),
    }
    match Manifest::find() {
        Err(e) => println!("NPU kernels: {e}"),
        Ok(m) => {
            let checks = m.check_files();
            let ok = checks.iter().filter(|(_, c)| *c == FileCheck::Ok).count();
            println!(
                "NPU kernels: {} (target {}): {} kernels, {ok} with their files as the \
                 manifest lists them",
                m.dir.join("manifest.toml").display(),
                m.target,
                m.kernels.len()
            );
            for (i, check) in checks {
                match check {
                    FileCheck::Ok => {}
                    FileCheck::Missing(p) => {
                        println!("  kernel {i}: {} is missing", p.display())
                    }
                    FileCheck::Mismatch(p) => println!(
                        "  kernel {i}: {} does not match its sha256 in the manifest: rebuild \
                         the kernels",
                        p.display()
                    ),
                }
            }
        }
    }
    println!("CPU: {}", cpu_features());
    match resolve(Backend::Auto, false, Kernels::default()) {
        Ok(r) => match r.note {
            Some(note) => println!("{note}"),
            None => println!("backend auto: {}", r.backend),
        },
        Err(e) => println!("backend auto: {e}"),
    }
    Ok(())
}

/// The vector extensions the CPU kernels (emulator, LayerNorm) can use here.
fn cpu_features() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        let features: Vec<&str> = [
            ("avx512f", std::arch::is_x86_feature_detected!("avx512f")),
            ("avx2", std::arch::is_x86_feature_detected!("avx2")),
            ("fma", std::arch::is_x86_feature_detected!("fma")),
        ]
        .into_iter()
        .filter_map(|(n, on)| on.then_some(n))
        .collect();
        format!(
            "{} threads, x86_64 with {}",
            std::thread::available_parallelism().map_or(1, |n| n.get()),
            if features.is_empty() {
                "no AVX".to_string()
            } else {
                features.join(", ")
            }
        )
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        format!(
            "{} threads, {}",
            std::thread::available_parallelism().map_or(1, |n| n.get()),
            std::env::consts::ARCH
        )
    }
}
