//! Reader of CTranslate2 checkpoints (`model.bin`), the format faster-whisper uses.
//!
//! The layout (CTranslate2's `python/ctranslate2/specs/model_spec.py`, format version 6):
//! `u32` version; string spec name; `u32` spec revision; `u32` variable count; per variable:
//! string name, `u8` rank, `u32` dims, `u8` dtype (0 f32, 1 i8, 2 i16, 3 i32, 4 f16, 5 bf16),
//! `u32` byte count, raw little-endian bytes; then `u32` alias count and (alias, target)
//! string pairs. A string is a `u16` length that counts a trailing NUL, then its bytes.
//!
//! Quantised weights come with a `<name>_scale` variable (one value per row for int8, a scalar
//! for int16); the float weight is `q / scale`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use half::{bf16, f16};

/// Why a checkpoint cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum Ct2Error {
    /// The file cannot be read.
    #[error("{path}: cannot read: {err}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        err: std::io::Error,
    },
    /// The bytes do not follow the format.
    #[error("{path}: not a CTranslate2 model.bin ({detail})")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A variable the model needs is absent.
    #[error("{path}: variable {name} is missing{hint}")]
    Missing {
        /// The file.
        path: PathBuf,
        /// The variable's name.
        name: String,
        /// More context, or empty.
        hint: String,
    },
    /// A variable has an unexpected shape.
    #[error("{path}: variable {name} has shape {got:?}, expected {expected:?}")]
    Shape {
        /// The file.
        path: PathBuf,
        /// The variable's name.
        name: String,
        /// Its shape.
        got: Vec<usize>,
        /// The shape the model needs.
        expected: Vec<usize>,
    },
    /// The variables are there but describe no Whisper model (a zero or inconsistent
    /// dimension, a head count that does not divide the width).
    #[error("{path}: not a usable Whisper checkpoint: {detail}")]
    Whisper {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the variable.
        detail: String,
    },
}

/// Element types of a CTranslate2 variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ct2Dtype {
    /// 32-bit float.
    F32,
    /// 8-bit integer (quantised weights, flags).
    I8,
    /// 16-bit integer (quantised weights, small integers).
    I16,
    /// 32-bit integer.
    I32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    Bf16,
}

impl Ct2Dtype {
    fn from_code(code: u8) -> Option<Ct2Dtype> {
        Some(match code {
            0 => Ct2Dtype::F32,
            1 => Ct2Dtype::I8,
            2 => Ct2Dtype::I16,
            3 => Ct2Dtype::I32,
            4 => Ct2Dtype::F16,
            5 => Ct2Dtype::Bf16,
            _ => return None,
        })
    }

    fn size(self) -> usize {
        match self {
            Ct2Dtype::I8 => 1,
            Ct2Dtype::I16 | Ct2Dtype::F16 | Ct2Dtype::Bf16 => 2,
            Ct2Dtype::F32 | Ct2Dtype::I32 => 4,
        }
    }
}

/// One variable of a checkpoint, as stored.
#[derive(Debug, Clone)]
pub struct Ct2Variable {
    /// Its shape (empty for a scalar).
    pub shape: Vec<usize>,
    /// Its element type.
    pub dtype: Ct2Dtype,
    /// Its little-endian bytes.
    pub bytes: Vec<u8>,
}

impl Ct2Variable {
    /// The values converted to `f32`, without dequantisation.
    pub fn to_f32(&self) -> Vec<f32> {
        let b = &self.bytes;
        match self.dtype {
            Ct2Dtype::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            Ct2Dtype::F16 => b
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes(c.try_into().unwrap()).to_f32())
                .collect(),
            Ct2Dtype::Bf16 => b
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes(c.try_into().unwrap()).to_f32())
                .collect(),
            Ct2Dtype::I8 => b.iter().map(|&v| v as i8 as f32).collect(),
            Ct2Dtype::I16 => b
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect(),
            Ct2Dtype::I32 => b
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect(),
        }
    }

    /// The value of a scalar integer or float variable.
    pub fn scalar(&self) -> Option<f64> {
        (self.shape.iter().product::<usize>() == 1).then(|| self.to_f32()[0] as f64)
    }
}

/// A CTranslate2 checkpoint in memory.
#[derive(Debug)]
pub struct Ct2Model {
    path: PathBuf,
    /// The model specification's name (`WhisperSpec` for Whisper).
    pub spec: String,
    /// The specification's revision.
    pub revision: u32,
    variables: HashMap<String, Ct2Variable>,
    aliases: HashMap<String, String>,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| {
                format!(
                    "the file ends at byte {} inside a record of {n} bytes",
                    self.bytes.len()
                )
            })?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn string(&mut self) -> Result<String, String> {
        let len = self.u16()? as usize;
        let bytes = self.take(len)?;
        let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
        String::from_utf8(bytes.to_vec()).map_err(|_| "a name is not UTF-8".to_string())
    }
}

impl Ct2Model {
    /// A model of `variables` named as CTranslate2's Whisper specification names them, made
    /// from another format (`spec` says which); `path` is where they came from, for messages.
    pub fn from_variables(
        path: &Path,
        spec: String,
        variables: HashMap<String, Ct2Variable>,
    ) -> Ct2Model {
        Ct2Model {
            path: path.to_path_buf(),
            spec,
            revision: 0,
            variables,
            aliases: HashMap::new(),
        }
    }

    /// Reads `model.bin` (or the `model.bin` inside a directory).
    pub fn open(path: &Path) -> Result<Ct2Model, Ct2Error> {
        let path = if path.is_dir() {
            path.join("model.bin")
        } else {
            path.to_path_buf()
        };
        let bytes = std::fs::read(&path).map_err(|err| Ct2Error::Io {
            path: path.clone(),
            err,
        })?;
        Ct2Model::parse(&path, &bytes).map_err(|detail| Ct2Error::Format {
            path: path.clone(),
            detail,
        })
    }

    fn parse(path: &Path, bytes: &[u8]) -> Result<Ct2Model, String> {
        let mut c = Cursor { bytes, at: 0 };
        let version = c.u32()?;
        if !(3..=6).contains(&version) {
            return Err(format!(
                "format version {version}, this reader knows 3 to 6"
            ));
        }
        let spec = c.string()?;
        let revision = c.u32()?;
        let count = c.u32()? as usize;
        let mut variables = HashMap::with_capacity(count.min(1 << 16));
        for _ in 0..count {
            let name = c.string()?;
            let rank = c.u8()? as usize;
            let shape: Vec<usize> = (0..rank)
                .map(|_| c.u32().map(|d| d as usize))
                .collect::<Result<_, _>>()?;
            let code = c.u8()?;
            let dtype = Ct2Dtype::from_code(code)
                .ok_or_else(|| format!("variable {name} has unknown dtype code {code}"))?;
            let len = c.u32()? as usize;
            // Checked: a forged shape must not wrap around to the stated length.
            let expected = shape
                .iter()
                .try_fold(dtype.size(), |acc, d| acc.checked_mul(*d));
            if expected != Some(len) {
                return Err(format!(
                    "variable {name}: {len} bytes for shape {shape:?} of {dtype:?}"
                ));
            }
            let bytes = c.take(len)?.to_vec();
            variables.insert(
                name,
                Ct2Variable {
                    shape,
                    dtype,
                    bytes,
                },
            );
        }
        let mut aliases = HashMap::new();
        if c.at < bytes.len() {
            for _ in 0..c.u32()? {
                let alias = c.string()?;
                let target = c.string()?;
                aliases.insert(alias, target);
            }
        }
        if c.at != bytes.len() {
            return Err(format!(
                "{} unexpected bytes after the last record",
                bytes.len() - c.at
            ));
        }
        Ok(Ct2Model {
            path: path.to_path_buf(),
            spec,
            revision,
            variables,
            aliases,
        })
    }

    /// The file the checkpoint was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A variable by name, following aliases.
    pub fn get(&self, name: &str) -> Option<&Ct2Variable> {
        let name = self.aliases.get(name).map(String::as_str).unwrap_or(name);
        self.variables.get(name)
    }

    /// Names of all variables (aliases excluded).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.variables.keys().map(String::as_str)
    }

    fn missing(&self, name: &str) -> Ct2Error {
        Ct2Error::Missing {
            path: self.path.clone(),
            name: name.to_string(),
            hint: String::new(),
        }
    }

    /// A float weight of the expected shape, dequantised when stored as int8/int16 with a
    /// `<name>_scale` companion.
    pub fn weight(&self, name: &str, expected: &[usize]) -> Result<Vec<f32>, Ct2Error> {
        let var = self.get(name).ok_or_else(|| self.missing(name))?;
        if var.shape != expected {
            return Err(Ct2Error::Shape {
                path: self.path.clone(),
                name: name.to_string(),
                got: var.shape.clone(),
                expected: expected.to_vec(),
            });
        }
        let mut values = var.to_f32();
        if matches!(var.dtype, Ct2Dtype::I8 | Ct2Dtype::I16) {
            let scale_name = format!("{name}_scale");
            let scale = self.get(&scale_name).ok_or_else(|| Ct2Error::Missing {
                path: self.path.clone(),
                name: scale_name.clone(),
                hint: format!(
                    " ({name} is quantised to {:?} and needs its scale)",
                    var.dtype
                ),
            })?;
            let scale = scale.to_f32();
            let rows = expected.first().copied().unwrap_or(1);
            let row_len = values.len() / rows.max(1);
            match scale.len() {
                1 => values.iter_mut().for_each(|v| *v /= scale[0]),
                n if n == rows => {
                    for (row, s) in values.chunks_mut(row_len).zip(&scale) {
                        row.iter_mut().for_each(|v| *v /= s);
                    }
                }
                n => {
                    return Err(Ct2Error::Shape {
                        path: self.path.clone(),
                        name: scale_name,
                        got: vec![n],
                        expected: vec![rows],
                    });
                }
            }
        }
        Ok(values)
    }

    /// A scalar setting (`encoder/num_heads`, ...).
    pub fn scalar(&self, name: &str) -> Result<f64, Ct2Error> {
        self.get(name)
            .and_then(Ct2Variable::scalar)
            .ok_or_else(|| self.missing(name))
    }

    /// The shape of a variable.
    pub fn shape(&self, name: &str) -> Result<&[usize], Ct2Error> {
        self.get(name)
            .map(|v| v.shape.as_slice())
            .ok_or_else(|| self.missing(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(s: &str) -> Vec<u8> {
        let mut b = ((s.len() + 1) as u16).to_le_bytes().to_vec();
        b.extend(s.as_bytes());
        b.push(0);
        b
    }

    fn variable(name: &str, shape: &[u32], dtype: u8, bytes: &[u8]) -> Vec<u8> {
        let mut b = string(name);
        b.push(shape.len() as u8);
        shape.iter().for_each(|d| b.extend(d.to_le_bytes()));
        b.push(dtype);
        b.extend((bytes.len() as u32).to_le_bytes());
        b.extend(bytes);
        b
    }

    fn checkpoint(vars: &[Vec<u8>], aliases: &[(&str, &str)]) -> Vec<u8> {
        let mut b = 6u32.to_le_bytes().to_vec();
        b.extend(string("WhisperSpec"));
        b.extend(3u32.to_le_bytes());
        b.extend((vars.len() as u32).to_le_bytes());
        vars.iter().for_each(|v| b.extend(v));
        b.extend((aliases.len() as u32).to_le_bytes());
        for (a, t) in aliases {
            b.extend(string(a));
            b.extend(string(t));
        }
        b
    }

    #[test]
    fn reads_every_dtype_dequantises_and_follows_aliases() {
        let f16s: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_le_bytes())
            .collect();
        let bf16s: Vec<u8> = [0.5f32]
            .iter()
            .flat_map(|&v| bf16::from_f32(v).to_le_bytes())
            .collect();
        let i8s = [127u8, 0x81, 64, 2];
        let scales: Vec<u8> = [127.0f32, 2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let bytes = checkpoint(
            &[
                variable("a/f16", &[2], 4, &f16s),
                variable("a/bf16", &[1], 5, &bf16s),
                variable("q/weight", &[2, 2], 1, &i8s),
                variable("q/weight_scale", &[2], 0, &scales),
                variable("heads", &[], 2, &6i16.to_le_bytes()),
            ],
            &[("tied/weight", "a/f16")],
        );
        let m = Ct2Model::parse(Path::new("m.bin"), &bytes).unwrap();
        assert_eq!((m.spec.as_str(), m.revision), ("WhisperSpec", 3));
        assert_eq!(m.weight("a/f16", &[2]).unwrap(), [1.5, -2.0]);
        assert_eq!(m.weight("tied/weight", &[2]).unwrap(), [1.5, -2.0]);
        assert_eq!(m.weight("a/bf16", &[1]).unwrap(), [0.5]);
        assert_eq!(
            m.weight("q/weight", &[2, 2]).unwrap(),
            [1.0, -1.0, 32.0, 1.0]
        );
        assert_eq!(m.scalar("heads").unwrap(), 6.0);
        let err = m.weight("a/f16", &[3]).unwrap_err().to_string();
        assert!(
            err.contains("a/f16") && err.contains("[2]") && err.contains("[3]"),
            "{err}"
        );
        assert!(
            m.weight("nope", &[1])
                .unwrap_err()
                .to_string()
                .contains("nope is missing")
        );
    }

    #[test]
    fn truncated_or_foreign_files_are_refused() {
        let bytes = checkpoint(&[variable("x", &[4], 0, &[0; 16])], &[]);
        for cut in [3, 10, 30, bytes.len() - 1] {
            let err = Ct2Model::parse(Path::new("m.bin"), &bytes[..cut]).unwrap_err();
            assert!(!err.is_empty());
        }
        let err = Ct2Model::parse(Path::new("m.bin"), b"PK\x03\x04 this is a zip").unwrap_err();
        assert!(err.contains("format version"), "{err}");
    }

    /// Whisper variables of the wrong rank, a zero width or a head count that does not
    /// divide the width are refused by name, not indexed or divided by.
    #[test]
    fn crafted_whisper_dimensions_are_refused_by_name() {
        use crate::model::convert::{ct2_decoder_dims, ct2_encoder_dims};
        let f32s = |n: usize| vec![0u8; n * 4];
        let encoder = |conv: &[u32], pos: &[u32], heads: Option<f32>| {
            let mut vars = vec![
                variable(
                    "encoder/conv1/weight",
                    conv,
                    0,
                    &f32s(conv.iter().product::<u32>() as usize),
                ),
                variable(
                    "encoder/position_encodings/encodings",
                    pos,
                    0,
                    &f32s(pos.iter().product::<u32>() as usize),
                ),
                variable("encoder/layer_0/ffn/linear_0/weight", &[8, 4], 0, &f32s(32)),
            ];
            if let Some(h) = heads {
                vars.push(variable("encoder/num_heads", &[], 0, &h.to_le_bytes()));
            }
            Ct2Model::parse(Path::new("m.bin"), &checkpoint(&vars, &[])).unwrap()
        };
        let cases = [
            (
                encoder(&[4, 2, 3], &[6], None),
                "encoder/position_encodings/encodings",
            ),
            (
                encoder(&[4, 2, 3], &[6, 4], Some(0.0)),
                "encoder/num_heads is 0",
            ),
            (encoder(&[4, 2, 3], &[6, 4], Some(3.0)), "3 heads"),
            (encoder(&[4, 2, 3], &[6, 4], None), "no encoder/num_heads"),
            (
                encoder(&[0, 2, 3], &[6, 4], Some(1.0)),
                "encoder/conv1/weight",
            ),
        ];
        for (m, problem) in cases {
            let err = ct2_encoder_dims(&m).unwrap_err().to_string();
            assert!(
                err.contains(problem) && err.contains("m.bin"),
                "{problem}: {err}"
            );
        }
        let m = encoder(&[4, 2, 3], &[6, 4], Some(2.0));
        assert_eq!(ct2_encoder_dims(&m).unwrap().n_heads, 2);
        let decoder = Ct2Model::parse(
            Path::new("m.bin"),
            &checkpoint(
                &[variable("decoder/embeddings/weight", &[5], 0, &f32s(5))],
                &[],
            ),
        )
        .unwrap();
        let err = ct2_decoder_dims(&decoder).unwrap_err().to_string();
        assert!(err.contains("decoder/embeddings/weight"), "{err}");
    }

    /// A shape whose product overflows cannot wrap around to the stated byte count: 2^32 x
    /// 2^32 float32 values wrap to 0 bytes in 64-bit arithmetic.
    #[test]
    fn a_forged_shape_is_refused_not_wrapped() {
        let forged = checkpoint(&[variable("huge", &[u32::MAX, u32::MAX, 16], 0, &[])], &[]);
        let err = Ct2Model::parse(Path::new("m.bin"), &forged).unwrap_err();
        assert!(err.contains("huge") && err.contains("0 bytes"), "{err}");
        let forged = checkpoint(&[variable("wraps", &[1 << 31, 1 << 31, 4], 0, &[])], &[]);
        let err = Ct2Model::parse(Path::new("m.bin"), &forged).unwrap_err();
        assert!(err.contains("wraps"), "{err}");
    }
}
