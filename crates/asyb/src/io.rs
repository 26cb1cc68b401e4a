//! Atomic file output: write to a temporary file in the target's directory, fsync, then
//! rename over the target and fsync the directory, so that a crash or an error never
//! leaves a partial file where an output was asked for.

use std::io::{BufWriter, Write};
use std::path::Path;

use tempfile::NamedTempFile;

use crate::{Error, Result};

/// Writes `path` atomically with the bytes produced by `fill`. On any error (from `fill`
/// or from the file system) the target is left untouched and the temporary file is
/// removed.
pub fn atomic_write<F>(path: &Path, fill: F) -> Result<()>
where
    F: FnOnce(&mut dyn Write) -> Result<()>,
{
    let tmp = temp_beside(path)?;
    {
        let mut w = BufWriter::new(tmp.as_file());
        fill(&mut w)?;
        w.flush().map_err(|e| Error::io(path, e))?;
    }
    persist(tmp, path)
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// A temporary file in `path`'s directory (so that the final rename stays on one file
/// system), removed when dropped. Created with the permissions a plain `File::create`
/// would give (0666 less the umask) rather than tempfile's private 0600, since it
/// becomes the user's output file.
pub fn temp_beside(path: &Path) -> Result<NamedTempFile> {
    let mut b = tempfile::Builder::new();
    b.prefix(".asyb-tmp-");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        b.permissions(std::fs::Permissions::from_mode(0o666));
    }
    b.tempfile_in(parent_dir(path))
        .map_err(|e| Error::io(path, e))
}

/// Fsyncs `tmp`, renames it to `path` and fsyncs the directory, so that the new name
/// survives a crash.
pub fn persist(tmp: NamedTempFile, path: &Path) -> Result<()> {
    tmp.as_file().sync_all().map_err(|e| Error::io(path, e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    #[cfg(unix)]
    {
        // Some file systems refuse to fsync a directory; the rename itself has happened.
        if let Ok(d) = std::fs::File::open(parent_dir(path)) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Maps an I/O error from inside an [`atomic_write`] closure to the library error.
pub fn io_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::io(path, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_write_leaves_the_old_file_and_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.txt");
        atomic_write(&p, |w| w.write_all(b"old").map_err(io_err(&p))).unwrap();
        let err = atomic_write(&p, |w| {
            w.write_all(b"partial").map_err(io_err(&p))?;
            Err(Error::config("x", "fails mid-write"))
        });
        assert!(err.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "temporary file left behind");
    }

    #[cfg(unix)]
    #[test]
    fn output_is_not_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.txt");
        atomic_write(&p, |w| w.write_all(b"x").map_err(io_err(&p))).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        // Whatever the umask, group or others get at least what the umask leaves.
        let umask_mask = 0o666 & !current_umask();
        assert_eq!(mode, umask_mask);
    }

    #[cfg(unix)]
    fn current_umask() -> u32 {
        // Read the umask through a plain file created the ordinary way.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("probe");
        std::fs::File::create(&p).unwrap();
        use std::os::unix::fs::PermissionsExt;
        0o666 & !(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777)
    }
}
