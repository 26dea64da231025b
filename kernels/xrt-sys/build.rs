//! Builds the C++ shim over XRT when the `xrt` feature is on; does nothing
//! native otherwise.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "xrt")]
    native::build();
}

#[cfg(feature = "xrt")]
mod native {
    use std::env;
    use std::fmt::Write as _;
    use std::path::{Path, PathBuf};

    const ENV_VARS: [&str; 3] = ["XILINX_XRT", "XRT_INCLUDE_DIR", "XRT_LIB_DIR"];

    /// Where XRT was found.
    struct Xrt {
        /// Directory `D` such that `D/xrt/xrt_device.h` exists.
        include_dir: PathBuf,
        /// Directory holding `libxrt_coreutil`; `None` leaves it to the linker's default search.
        lib_dir: Option<PathBuf>,
        /// Where this candidate came from, for messages.
        origin: String,
    }

    pub fn build() {
        for var in ENV_VARS {
            println!("cargo:rerun-if-env-changed={var}");
        }
        println!("cargo:rerun-if-changed=shim/xrt_shim.cpp");
        println!("cargo:rerun-if-changed=shim/xrt_shim.h");

        let mut rejected = Vec::new();
        let Some(xrt) = find_xrt(&mut rejected) else {
            fail_not_found(&rejected);
        };
        for (origin, reason) in rejected.iter().filter(|(origin, _)| is_explicit(origin)) {
            println!(
                "cargo:warning=xrt-sys: ignored {origin}: {reason}; using {}",
                xrt.origin
            );
        }

        let version_header = find_version_header(&xrt.include_dir);
        let version = match &version_header {
            Some(header) => read_version(header).unwrap_or_else(|| {
                println!(
                    "cargo:warning=xrt-sys: no xrt_build_version in {}; reporting the XRT version as unknown",
                    header.display()
                );
                "unknown".to_owned()
            }),
            None => {
                println!(
                    "cargo:warning=xrt-sys: no version.h under {}; reporting the XRT version as unknown",
                    xrt.include_dir.display()
                );
                "unknown".to_owned()
            }
        };
        let hw_context = hw_context_header(&xrt.include_dir);
        if hw_context.is_none() && version_at_least(&version, 2, 15) {
            println!(
                "cargo:warning=xrt-sys: XRT {version} should provide xrt/xrt_hw_context.h but {} has none; building without hw_context support",
                xrt.include_dir.display()
            );
        }

        let mut build = cc::Build::new();
        build
            .cpp(true)
            .std("c++17")
            .warnings(true)
            .extra_warnings(true)
            .file("shim/xrt_shim.cpp")
            .include("shim")
            .flag("-isystem")
            .flag(xrt.include_dir.to_string_lossy().as_ref());
        if let Some(header) = &version_header {
            build.define(
                "XRT_SHIM_VERSION_HEADER",
                Some(format!("\"{}\"", header.display()).as_str()),
            );
        }
        match hw_context {
            Some(HwContextHeader::Stable) => {
                build.define("XRT_SHIM_HAS_HW_CONTEXT", None);
            }
            Some(HwContextHeader::Experimental) => {
                build.define("XRT_SHIM_HAS_HW_CONTEXT", None);
                build.define("XRT_SHIM_HW_CONTEXT_EXPERIMENTAL", None);
            }
            None => {}
        }
        build.compile("xrt_shim");

        if let Some(lib_dir) = &xrt.lib_dir {
            println!("cargo:rustc-link-search=native={}", lib_dir.display());
            if !is_system_lib_dir(lib_dir) {
                // Lets this crate's own tests find XRT at run time.
                println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib_dir.display());
            }
        }
        // Every symbol the shim uses lives in libxrt_coreutil; it loads the
        // driver layer (libxrt_core, driver plugins) itself at run time.
        println!("cargo:rustc-link-lib=dylib=xrt_coreutil");

        println!("cargo:rustc-env=XRT_SHIM_VERSION={version}");
        println!(
            "cargo:rustc-env=XRT_SHIM_HAS_HW_CONTEXT={}",
            u8::from(hw_context.is_some())
        );
    }

    fn is_explicit(origin: &str) -> bool {
        ENV_VARS.iter().any(|var| origin.contains(var))
    }

    fn env_path(var: &str) -> Option<PathBuf> {
        env::var_os(var)
            .filter(|value| !value.is_empty())
            .map(PathBuf::from)
    }

    /// Tries each candidate in order; records why each rejected one failed.
    fn find_xrt(rejected: &mut Vec<(String, String)>) -> Option<Xrt> {
        if let Some(prefix) = env_path("XILINX_XRT") {
            let origin = format!("XILINX_XRT={}", prefix.display());
            let lib_dir = [prefix.join("lib"), prefix.join("lib64")]
                .into_iter()
                .find(|dir| has_library(dir, "xrt_coreutil"));
            let include = prefix.join("include");
            if let Some(xrt) = take(
                origin,
                include_dir_of(&include),
                lib_dir,
                || format!("{} has no xrt/xrt_device.h", include.display()),
                || {
                    format!(
                        "neither {0}/lib nor {0}/lib64 holds libxrt_coreutil",
                        prefix.display()
                    )
                },
                rejected,
            ) {
                return Some(xrt);
            }
        }

        if let Some(include) = env_path("XRT_INCLUDE_DIR") {
            let lib = env_path("XRT_LIB_DIR");
            let origin = match &lib {
                Some(lib) => format!(
                    "XRT_INCLUDE_DIR={} with XRT_LIB_DIR={}",
                    include.display(),
                    lib.display()
                ),
                None => format!("XRT_INCLUDE_DIR={}", include.display()),
            };
            match (include_dir_of(&include), lib) {
                (None, _) => rejected.push((
                    origin,
                    format!("{} has no xrt/xrt_device.h", include.display()),
                )),
                (Some(_), Some(lib)) if !has_library(&lib, "xrt_coreutil") => rejected.push((
                    origin,
                    format!("{} holds no libxrt_coreutil", lib.display()),
                )),
                (Some(include_dir), Some(lib)) => {
                    return Some(Xrt {
                        include_dir,
                        lib_dir: Some(lib),
                        origin,
                    });
                }
                (Some(include_dir), None) => {
                    return Some(Xrt {
                        include_dir,
                        lib_dir: default_lib_dirs()
                            .into_iter()
                            .find(|dir| has_library(dir, "xrt_coreutil")),
                        origin,
                    });
                }
            }
        } else if let Some(lib) = env_path("XRT_LIB_DIR") {
            rejected.push((
                format!("XRT_LIB_DIR={}", lib.display()),
                "XRT_LIB_DIR is only used together with XRT_INCLUDE_DIR".to_owned(),
            ));
        }

        match pkg_config::Config::new()
            .cargo_metadata(false)
            .env_metadata(true)
            .probe("xrt")
        {
            Ok(library) => {
                let include_dir = library
                    .include_paths
                    .iter()
                    .find_map(|dir| include_dir_of(dir));
                let lib_dir = library
                    .link_paths
                    .iter()
                    .find(|dir| has_library(dir, "xrt_coreutil"))
                    .cloned();
                let origin = format!("pkg-config xrt {}", library.version);
                let include_paths = &library.include_paths;
                let link_paths = &library.link_paths;
                if let Some(xrt) = take(
                    origin,
                    include_dir,
                    lib_dir,
                    || format!("none of its include paths {include_paths:?} has xrt/xrt_device.h"),
                    || format!("none of its library paths {link_paths:?} holds libxrt_coreutil"),
                    rejected,
                ) {
                    return Some(xrt);
                }
            }
            Err(error) => rejected.push((
                "pkg-config xrt".to_owned(),
                error
                    .to_string()
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
            )),
        }

        let opt = Path::new("/opt/xilinx/xrt");
        let opt_lib = opt.join("lib");
        let opt_lib = has_library(&opt_lib, "xrt_coreutil").then_some(opt_lib);
        let opt_missing = || "no XRT headers and libxrt_coreutil there".to_owned();
        if let Some(xrt) = take(
            opt.display().to_string(),
            include_dir_of(&opt.join("include")),
            opt_lib,
            opt_missing,
            opt_missing,
            rejected,
        ) {
            return Some(xrt);
        }

        let debian_lib = default_lib_dirs()
            .into_iter()
            .find(|dir| has_library(dir, "xrt_coreutil"));
        let debian_missing = || {
            "no /usr/include/xrt/xrt/xrt_device.h with libxrt_coreutil in the system library \
             directories"
                .to_owned()
        };
        take(
            "Debian's libxrt-dev layout".to_owned(),
            include_dir_of(Path::new("/usr/include/xrt")),
            debian_lib,
            debian_missing,
            debian_missing,
            rejected,
        )
    }

    /// Takes a candidate that has both its header and its library directory; otherwise
    /// records why not (`no_headers` or `no_library`) and returns `None`.
    fn take(
        origin: String,
        include_dir: Option<PathBuf>,
        lib_dir: Option<PathBuf>,
        no_headers: impl FnOnce() -> String,
        no_library: impl FnOnce() -> String,
        rejected: &mut Vec<(String, String)>,
    ) -> Option<Xrt> {
        match (include_dir, lib_dir) {
            (Some(include_dir), Some(lib_dir)) => Some(Xrt {
                include_dir,
                lib_dir: Some(lib_dir),
                origin,
            }),
            (None, _) => {
                rejected.push((origin, no_headers()));
                None
            }
            (Some(_), None) => {
                rejected.push((origin, no_library()));
                None
            }
        }
    }

    /// Returns the directory to pass as include path: `dir` when
    /// `dir/xrt/xrt_device.h` exists, or `dir/xrt` when the headers sit one
    /// level deeper (Debian installs them under /usr/include/xrt).
    fn include_dir_of(dir: &Path) -> Option<PathBuf> {
        [dir.to_path_buf(), dir.join("xrt")]
            .into_iter()
            .find(|candidate| candidate.join("xrt").join("xrt_device.h").is_file())
    }

    fn has_library(dir: &Path, name: &str) -> bool {
        ["so", "a"]
            .iter()
            .any(|ext| dir.join(format!("lib{name}.{ext}")).is_file())
    }

    fn default_lib_dirs() -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        if let Some(triple) = multiarch_triple() {
            dirs.push(PathBuf::from(format!("/usr/lib/{triple}")));
            dirs.push(PathBuf::from(format!("/lib/{triple}")));
        }
        dirs.push(PathBuf::from("/usr/lib64"));
        dirs.push(PathBuf::from("/usr/lib"));
        dirs
    }

    fn multiarch_triple() -> Option<String> {
        let arch = env::var("CARGO_CFG_TARGET_ARCH").ok()?;
        let os = env::var("CARGO_CFG_TARGET_OS").ok()?;
        if os != "linux" {
            return None;
        }
        let triple = match arch.as_str() {
            "x86_64" => "x86_64-linux-gnu",
            "aarch64" => "aarch64-linux-gnu",
            "x86" => "i386-linux-gnu",
            "arm" => "arm-linux-gnueabihf",
            "riscv64" => "riscv64-linux-gnu",
            "powerpc64" => "powerpc64le-linux-gnu",
            "s390x" => "s390x-linux-gnu",
            _ => return None,
        };
        Some(triple.to_owned())
    }

    fn is_system_lib_dir(dir: &Path) -> bool {
        default_lib_dirs().iter().any(|system| system == dir)
    }

    /// XRT up to 2.18 installs version.h at the include root, later ones
    /// under xrt/detail/.
    fn find_version_header(include_dir: &Path) -> Option<PathBuf> {
        [
            include_dir.join("xrt").join("detail").join("version.h"),
            include_dir.join("version.h"),
        ]
        .into_iter()
        .find(|path| path.is_file())
    }

    /// Reads `xrt_build_version` from version.h, or from the headers next to
    /// it that recent XRTs moved it into.
    fn read_version(header: &Path) -> Option<String> {
        [
            header.to_path_buf(),
            header.with_file_name("version-slim.h"),
            header.with_file_name("version-git.h"),
        ]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .find_map(|text| {
            text.lines().find_map(|line| {
                let rest = line.split("xrt_build_version[]").nth(1)?;
                let start = rest.find('"')? + 1;
                let len = rest[start..].find('"')?;
                let version = rest[start..start + len].trim();
                (!version.is_empty()).then(|| version.to_owned())
            })
        })
    }

    fn version_at_least(version: &str, major: u32, minor: u32) -> bool {
        let mut parts = version.split('.').map(|part| part.parse::<u32>().ok());
        match (parts.next().flatten(), parts.next().flatten()) {
            (Some(have_major), Some(have_minor)) => (have_major, have_minor) >= (major, minor),
            _ => false,
        }
    }

    #[derive(Clone, Copy)]
    enum HwContextHeader {
        Stable,
        Experimental,
    }

    fn hw_context_header(include_dir: &Path) -> Option<HwContextHeader> {
        if include_dir.join("xrt").join("xrt_hw_context.h").is_file() {
            Some(HwContextHeader::Stable)
        } else if include_dir
            .join("experimental")
            .join("xrt_hw_context.h")
            .is_file()
        {
            Some(HwContextHeader::Experimental)
        } else {
            None
        }
    }

    fn fail_not_found(rejected: &[(String, String)]) -> ! {
        let mut message = String::from(
            "xrt-sys: the `xrt` feature needs XRT (headers and libxrt_coreutil), and none was found.\n\
             Looked at:\n",
        );
        for (origin, reason) in rejected {
            let _ = writeln!(message, "  - {origin}: {reason}");
        }
        message.push_str(
            "Install XRT (Debian/Ubuntu: `apt-get install libxrt-dev`; AMD NPUs need XRT >= 2.17 with \
             the amdxdna driver, usually in /opt/xilinx/xrt), or point the build at it:\n  \
             XILINX_XRT=<prefix>            uses <prefix>/include and <prefix>/lib\n  \
             XRT_INCLUDE_DIR=<dir>          the directory containing xrt/xrt_device.h\n  \
             XRT_LIB_DIR=<dir>              the directory containing libxrt_coreutil.so\n\
             or build without `--features xrt`.",
        );
        eprintln!("{message}");
        std::process::exit(1);
    }
}
