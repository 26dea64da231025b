//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The reference data made with OpenAI's and Hugging Face's own code.
///
/// Found at `$AMANUENSIS_REFERENCE`, else at `../shared/reference` beside the repository. A test
/// that needs it fails (never skips) when it is missing.
pub fn reference_dir() -> PathBuf {
    let dir = std::env::var_os("AMANUENSIS_REFERENCE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/reference"));
    assert!(
        dir.join("README.md").is_file(),
        "reference data not found at {}: set AMANUENSIS_REFERENCE to the folder that holds \
         mel_filters.npz, inputs/ and tiny.en/",
        dir.display()
    );
    dir
}

pub fn reference(path: &str) -> PathBuf {
    let path = reference_dir().join(path);
    assert!(
        path.exists(),
        "reference file {} is missing",
        path.display()
    );
    path
}

/// Reads a float32 .npy file: its shape and its values.
pub fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let shape = npy.shape().iter().map(|&d| d as usize).collect();
    (shape, npy.into_vec::<f32>().unwrap())
}

/// Writes mono samples as a 32-bit float WAV.
pub fn write_wav_f32(path: &Path, rate: u32, samples: &[f32]) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for &s in samples {
        w.write_sample(s).unwrap();
    }
    w.finalize().unwrap();
}

/// Largest absolute difference between two arrays of equal length.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "arrays differ in length");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Mean absolute difference between two arrays of equal length.
pub fn mean_abs_diff(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "arrays differ in length");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() as f64)
        .sum::<f64>()
        / a.len() as f64
}
