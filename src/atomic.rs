//! Output files written whole or not at all.
//!
//! Every file the crate and its command line write as a result (transcripts, reports, `.npy`
//! arrays) goes to a temporary file beside its destination and is renamed over it only once
//! complete: an interrupted or failed run leaves no file that looks finished.

use std::io::{self, BufWriter, Write};
use std::path::Path;

/// A temporary file in `dir`, to be renamed over an output once complete, with the
/// permissions a plain create gives (0666 less the umask) rather than tempfile's private
/// 0600: the finished output must read like any other file the user writes.
pub fn output_temp_file(dir: &Path) -> io::Result<tempfile::NamedTempFile> {
    let mut builder = tempfile::Builder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    builder.tempfile_in(dir)
}

/// The directory `path` is written in (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Writes `path` with `write`, through a temporary file in the same directory that is synced
/// and renamed over `path` once `write` has succeeded; on any error nothing appears at `path`
/// (an existing file there is left as it was).
pub fn write_file(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let mut tmp = output_temp_file(parent_dir(path))?;
    {
        let mut out = BufWriter::new(tmp.as_file_mut());
        write(&mut out)?;
        out.flush()?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        write_file(&path, |w| w.write_all(b"whole")).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"whole");
        let err = write_file(&path, |w| {
            w.write_all(b"partial")?;
            Err(io::Error::other("interrupted"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "interrupted");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"whole",
            "the old file is kept"
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary left"
        );
    }
}
