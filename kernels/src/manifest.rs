//! The kernel manifest: which xclbin and instruction file implement which kernel of the
//! contract, at which shapes.
//!
//! `kernels/aie`'s build writes a directory holding the xclbins, the instruction files and a
//! `manifest.toml`:
//!
//! ```toml
//! format = 2
//! target = "npu1_4col"
//! rounding = "nearest_even" # how the kernels round to bf16: nearest_even | truncate
//!
//! [[kernel]]
//! kind = "gemm"            # gemm | softmax | gelu
//! epilogue = "bias"        # gemm only: none | bias | bias_gelu
//! output = "f32"           # gemm only: f32 | bf16 (attention's scores, left on the device)
//! xclbin = "gemm_64x64x32.xclbin"
//! kernel_name = "MLIR_AIE"
//! instructions = "gemm_1536x512x512.insts.bin"
//! shape = [1536, 512, 512] # gemm: padded M, K, N of one dispatch; softmax: rows, values
//!                          # of a row, row stride; gelu: elements
//! tile = [64, 64, 32]      # gemm only
//! sha256 = { xclbin = "…", instructions = "…" }
//! ```
//!
//! The directory is found at `$AMANUENSIS_KERNELS`, else `share/amanuensis/kernels` beside the
//! executable's prefix, else `~/.local/share/amanuensis/kernels`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The manifest format this build reads.
pub const FORMAT: u32 = 2;

/// Why a manifest cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// No kernel directory was found.
    #[error(
        "no NPU kernels found (looked in {looked}); build them with kernels/aie/build.sh and \
         set AMANUENSIS_KERNELS to the output directory"
    )]
    NotFound {
        /// The places looked in.
        looked: String,
    },
    /// The manifest could not be read or parsed.
    #[error("{path}: {detail}")]
    Invalid {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
}

/// A kernel kind of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KernelKind {
    /// The bf16 GEMM.
    Gemm,
    /// Row-wise softmax.
    Softmax,
    /// Elementwise GELU.
    Gelu,
}

/// How the kernels of a manifest round float32 to bfloat16.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ManifestRounding {
    /// Round to nearest, ties to even.
    #[default]
    NearestEven,
    /// Drop the low 16 bits.
    Truncate,
}

impl ManifestRounding {
    /// The contract's rounding this names.
    pub fn rounding(self) -> crate::bf16::Rounding {
        match self {
            ManifestRounding::NearestEven => crate::bf16::Rounding::NearestEven,
            ManifestRounding::Truncate => crate::bf16::Rounding::Truncate,
        }
    }
}

/// What the GEMM kernel does after the product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ManifestEpilogue {
    /// Nothing.
    #[default]
    None,
    /// Adds a bias row.
    Bias,
    /// Adds a bias row, then GELU.
    BiasGelu,
}

/// The element type a GEMM writes C in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ManifestOutput {
    /// float32, read back by the host.
    #[default]
    F32,
    /// bfloat16 rounded as the manifest's `rounding` says, read by the next kernel.
    Bf16,
}

/// Checksums of a kernel's files.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Checksums {
    /// sha256 of the xclbin, hex.
    pub xclbin: String,
    /// sha256 of the instruction file, hex.
    pub instructions: String,
}

/// One kernel entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct KernelEntry {
    /// The contract kernel it implements.
    pub kind: KernelKind,
    /// The GEMM's epilogue.
    #[serde(default)]
    pub epilogue: ManifestEpilogue,
    /// The GEMM's output type.
    #[serde(default)]
    pub output: ManifestOutput,
    /// The xclbin file, relative to the manifest.
    pub xclbin: PathBuf,
    /// The kernel's name inside the xclbin (`MLIR_AIE` for mlir-aie builds).
    pub kernel_name: String,
    /// The instruction file (the runtime sequence), relative to the manifest.
    pub instructions: PathBuf,
    /// The shape one dispatch covers (see the module's documentation).
    pub shape: Vec<usize>,
    /// The per-core tile of a GEMM.
    #[serde(default)]
    pub tile: Option<[usize; 3]>,
    /// Checksums of the two files.
    pub sha256: Checksums,
}

/// A parsed manifest and where it lives.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Manifest {
    /// The format version ([`FORMAT`]).
    pub format: u32,
    /// The mlir-aie device the kernels were built for (`npu1_4col`, `npu2`).
    pub target: String,
    /// How the kernels round float32 to bfloat16 (`nearest_even` when absent).
    #[serde(default)]
    pub rounding: ManifestRounding,
    /// The kernels.
    #[serde(rename = "kernel", default)]
    pub kernels: Vec<KernelEntry>,
    /// The directory holding the manifest (set when read).
    #[serde(skip)]
    pub dir: PathBuf,
}

/// The state of one kernel's files against the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileCheck {
    /// Present with the listed checksum.
    Ok,
    /// Missing.
    Missing(PathBuf),
    /// Present with another checksum.
    Mismatch(PathBuf),
}

/// The directories searched for kernels, in order.
pub fn search_path() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("AMANUENSIS_KERNELS") {
        dirs.push(PathBuf::from(d));
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(prefix) = exe.parent().and_then(Path::parent)
    {
        dirs.push(prefix.join("share/amanuensis/kernels"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".local/share/amanuensis/kernels"));
    }
    dirs
}

impl Manifest {
    /// Reads the first `manifest.toml` on the [`search_path`].
    pub fn find() -> Result<Manifest, ManifestError> {
        let dirs = search_path();
        for dir in &dirs {
            if dir.join("manifest.toml").is_file() {
                return Manifest::read(&dir.join("manifest.toml"));
            }
        }
        Err(ManifestError::NotFound {
            looked: dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    /// Reads and checks a manifest file.
    pub fn read(path: &Path) -> Result<Manifest, ManifestError> {
        let invalid = |detail: String| ManifestError::Invalid {
            path: path.to_path_buf(),
            detail,
        };
        let text = std::fs::read_to_string(path).map_err(|e| invalid(e.to_string()))?;
        let mut m: Manifest = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        if m.format != FORMAT {
            return Err(invalid(format!(
                "manifest format {}, this build reads format {FORMAT}; rebuild the kernels",
                m.format
            )));
        }
        for (i, k) in m.kernels.iter().enumerate() {
            let expected = match k.kind {
                KernelKind::Gemm => 3,
                KernelKind::Softmax => 3,
                KernelKind::Gelu => 1,
            };
            if k.shape.len() != expected {
                return Err(invalid(format!(
                    "kernel {i} ({:?}) has a shape of {} dimensions, {expected} expected",
                    k.kind,
                    k.shape.len()
                )));
            }
            if k.kind == KernelKind::Gemm && k.tile.is_none() {
                return Err(invalid(format!("GEMM kernel {i} has no tile")));
            }
        }
        m.dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        Ok(m)
    }

    /// Checks every kernel's two files against their checksums.
    pub fn check_files(&self) -> Vec<(usize, FileCheck)> {
        let mut cache: BTreeMap<PathBuf, Option<String>> = BTreeMap::new();
        let mut out = Vec::new();
        for (i, k) in self.kernels.iter().enumerate() {
            let mut state = FileCheck::Ok;
            for (file, sum) in [
                (&k.xclbin, &k.sha256.xclbin),
                (&k.instructions, &k.sha256.instructions),
            ] {
                let path = self.dir.join(file);
                let digest = cache
                    .entry(path.clone())
                    .or_insert_with(|| sha256_file(&path))
                    .clone();
                match digest {
                    None => {
                        state = FileCheck::Missing(path);
                        break;
                    }
                    Some(d) if !d.eq_ignore_ascii_case(sum) => {
                        state = FileCheck::Mismatch(path);
                        break;
                    }
                    Some(_) => {}
                }
            }
            out.push((i, state));
        }
        out
    }

    /// The index of the kernel that serves `need`, if any: the GEMM epilogue is `bias_gelu`
    /// for a GELU (a zero bias when there is none), `bias` for a bias alone, else `none`.
    pub fn position(&self, need: &crate::device::KernelNeed) -> Option<usize> {
        use crate::device::Kernel;
        let kind = match need.kernel {
            Kernel::MatMul => KernelKind::Gemm,
            Kernel::Softmax => KernelKind::Softmax,
            Kernel::Gelu => KernelKind::Gelu,
        };
        let epilogue = match (need.bias, need.gelu) {
            (_, true) => ManifestEpilogue::BiasGelu,
            (true, false) => ManifestEpilogue::Bias,
            (false, false) => ManifestEpilogue::None,
        };
        let output = if need.bf16_out {
            ManifestOutput::Bf16
        } else {
            ManifestOutput::F32
        };
        self.kernels.iter().position(|e| {
            e.kind == kind
                && e.shape == need.shape
                && (kind != KernelKind::Gemm || (e.epilogue == epilogue && e.output == output))
        })
    }
}

fn sha256_file(path: &Path) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    let digest = Sha256::digest(&bytes);
    Some(digest.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("manifest.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn reads_checks_and_finds_kernels() {
        let dir = std::env::temp_dir().join(format!("amanuensis-manifest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("g.xclbin"), b"xclbin bytes").unwrap();
        std::fs::write(dir.join("g.insts"), b"instructions").unwrap();
        let x = sha256_file(&dir.join("g.xclbin")).unwrap();
        let i = sha256_file(&dir.join("g.insts")).unwrap();
        let text = format!(
            "format = 2\ntarget = \"npu1_4col\"\n\n[[kernel]]\nkind = \"gemm\"\nepilogue = \
             \"bias\"\nxclbin = \"g.xclbin\"\nkernel_name = \"MLIR_AIE\"\ninstructions = \
             \"g.insts\"\nshape = [1536, 512, 512]\ntile = [64, 64, 32]\nsha256 = {{ xclbin = \
             \"{x}\", instructions = \"{i}\" }}\n\n[[kernel]]\nkind = \"softmax\"\nxclbin = \
             \"s.xclbin\"\nkernel_name = \"MLIR_AIE\"\ninstructions = \"s.insts\"\nshape = \
             [256, 1500, 1536]\nsha256 = {{ xclbin = \"00\", instructions = \"00\" }}\n"
        );
        let m = Manifest::read(&write(&dir, &text)).unwrap();
        assert_eq!(m.kernels.len(), 2);
        let gemm = |bias, gelu| crate::device::KernelNeed {
            kernel: crate::device::Kernel::MatMul,
            shape: vec![1536, 512, 512],
            bias,
            gelu,
            bf16_out: false,
        };
        assert_eq!(m.position(&gemm(true, false)), Some(0));
        assert_eq!(
            m.position(&crate::device::KernelNeed {
                bf16_out: true,
                ..gemm(true, false)
            }),
            None
        );
        assert_eq!(
            m.position(&crate::device::KernelNeed::softmax(256, 1500, 1536)),
            Some(1)
        );
        assert_eq!(
            m.position(&crate::device::KernelNeed::softmax(256, 1536, 1536)),
            None
        );
        assert_eq!(m.position(&gemm(false, false)), None);
        assert_eq!(m.position(&gemm(true, true)), None);
        let checks = m.check_files();
        assert_eq!(checks[0].1, FileCheck::Ok);
        assert!(matches!(checks[1].1, FileCheck::Missing(_)));

        std::fs::write(dir.join("g.insts"), b"changed").unwrap();
        assert!(matches!(m.check_files()[0].1, FileCheck::Mismatch(_)));

        let err = Manifest::read(&write(&dir, "format = 1\ntarget = \"npu1_4col\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("format 1"), "{err}");
        let err = Manifest::read(&write(&dir, "format = 2\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("target"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
