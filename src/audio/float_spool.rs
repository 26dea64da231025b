//! A growing array of `f32` kept in memory up to a limit and in an anonymous temporary file
//! beyond it, read back at any offset.

use std::io::{Read, Seek, SeekFrom, Write};

enum Store {
    Memory(Vec<f32>),
    File(std::fs::File),
}

/// Values appended in order and read back at any offset; memory holds at most `limit` of
/// them, the rest moving to a temporary file (deleted when the spool is dropped).
pub(crate) struct FloatSpool {
    limit: usize,
    store: Store,
    len: usize,
}

impl FloatSpool {
    /// An empty spool that keeps up to `limit` values in memory.
    pub(crate) fn new(limit: usize) -> FloatSpool {
        FloatSpool {
            limit,
            store: Store::Memory(Vec::new()),
            len: 0,
        }
    }

    /// Values stored.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether the values are all in memory.
    pub(crate) fn in_memory(&self) -> bool {
        matches!(self.store, Store::Memory(_))
    }

    /// Appends `values`.
    pub(crate) fn push(&mut self, values: &[f32]) -> std::io::Result<()> {
        if let Store::Memory(v) = &mut self.store
            && v.len() + values.len() > self.limit
        {
            let mut file = tempfile::tempfile()?;
            file.write_all(&bytes(v))?;
            self.store = Store::File(file);
        }
        match &mut self.store {
            Store::Memory(v) => v.extend_from_slice(values),
            Store::File(f) => {
                f.seek(SeekFrom::End(0))?;
                f.write_all(&bytes(values))?;
            }
        }
        self.len += values.len();
        Ok(())
    }

    /// Reads `out.len()` values from `offset` (within what is stored).
    pub(crate) fn read(&mut self, offset: usize, out: &mut [f32]) -> std::io::Result<()> {
        assert!(offset + out.len() <= self.len, "read past the spool's end");
        match &mut self.store {
            Store::Memory(v) => out.copy_from_slice(&v[offset..offset + out.len()]),
            Store::File(f) => {
                f.seek(SeekFrom::Start((offset * 4) as u64))?;
                let mut raw = vec![0u8; out.len() * 4];
                f.read_exact(&mut raw)?;
                for (v, b) in out.iter_mut().zip(raw.chunks_exact(4)) {
                    *v = f32::from_le_bytes(b.try_into().expect("4 bytes"));
                }
            }
        }
        Ok(())
    }
}

/// The little-endian bytes of `values`.
fn bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_back_from_memory_and_from_the_file() {
        let values: Vec<f32> = (0..1000).map(|i| i as f32 * 0.5).collect();
        let mut spool = FloatSpool::new(300);
        for part in values.chunks(170) {
            spool.push(part).unwrap();
        }
        assert!(!spool.in_memory());
        assert_eq!(spool.len(), 1000);
        let mut out = vec![0.0; 400];
        spool.read(250, &mut out).unwrap();
        assert_eq!(out, &values[250..650]);
        let mut small = FloatSpool::new(300);
        small.push(&values[..200]).unwrap();
        assert!(small.in_memory());
        small.read(10, &mut out[..5]).unwrap();
        assert_eq!(&out[..5], &values[10..15]);
    }
}
