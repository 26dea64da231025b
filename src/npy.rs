//! `.npy` output that never leaves a partial file behind.
//!
//! The rows go to an unnamed temporary file next to the destination; the header and the rows
//! are then written through [`crate::atomic`] once the row count is known.

use std::fs::File;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use npyz::WriterBuilder;

/// Writes a little-endian `float32` array whose first dimension grows row by row: the shape is
/// `[rows, inner_shape...]`, with `rows` known only at [`finish`](NpyRowWriter::finish).
///
/// Memory use is one buffered row, whatever the number of rows.
#[derive(Debug)]
pub struct NpyRowWriter {
    path: PathBuf,
    dir: PathBuf,
    body: BufWriter<File>,
    inner_shape: Vec<u64>,
    row_len: usize,
    rows: u64,
}

impl NpyRowWriter {
    /// Prepares `path` for an array of rows of shape `inner_shape`; nothing appears at `path`
    /// before [`finish`](NpyRowWriter::finish).
    pub fn create(path: &Path, inner_shape: &[usize]) -> io::Result<NpyRowWriter> {
        let dir = crate::atomic::parent_dir(path).to_path_buf();
        if !dir.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("directory {} does not exist", dir.display()),
            ));
        }
        let body = BufWriter::new(tempfile::tempfile_in(&dir)?);
        Ok(NpyRowWriter {
            path: path.to_path_buf(),
            dir,
            body,
            inner_shape: inner_shape.iter().map(|&d| d as u64).collect(),
            row_len: inner_shape.iter().product(),
            rows: 0,
        })
    }

    /// Appends one row; `row` must hold the product of `inner_shape` values.
    pub fn push(&mut self, row: &[f32]) -> io::Result<()> {
        if row.len() != self.row_len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("row of {} values, expected {}", row.len(), self.row_len),
            ));
        }
        for v in row {
            self.body.write_all(&v.to_le_bytes())?;
        }
        self.rows += 1;
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Writes the header for the final shape, then moves the complete file into place.
    pub fn finish(self) -> io::Result<()> {
        let mut body = self.body.into_inner().map_err(|e| e.into_error())?;
        body.seek(SeekFrom::Start(0))?;
        let mut shape = vec![self.rows];
        shape.extend(&self.inner_shape);
        let mut out = crate::atomic::output_temp_file(&self.dir)?;
        {
            let mut writer = BufWriter::new(out.as_file_mut());
            npyz::WriteOptions::<f32>::new()
                .default_dtype()
                .shape(&shape)
                .writer(&mut writer)
                .write_header_only()?;
            io::copy(&mut body, &mut writer)?;
            writer.flush()?;
        }
        out.as_file().sync_all()?;
        out.persist(&self.path).map_err(|e| e.error)?;
        Ok(())
    }
}
