//! Checkpoints of a training run: the model with every coordinate brought up to date
//! (so no lazy-prox state is pending), the global step, the samples and training time
//! so far, and a key naming the data and the problem, so that a run can resume where
//! it stopped and a checkpoint is never applied to another problem.
//!
//! File `ckpt-<step>.asyb-ckpt` in the checkpoint directory, written atomically (a
//! temporary file, fsync, rename, fsync of the directory), so a file with that name is
//! always complete; the newest two are kept. Layout (little-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 8 | magic `ASYBCKPT` |
//! | 4 | version |
//! | 4 | length J of the JSON header |
//! | J | header: step, samples, training seconds, key, number of weights |
//! | 8 n | the weights (f64), in the model's layout order |
//! | 4 | CRC-32 of everything before it |
//!
//! Reading checks the magic, the version, the exact length and the checksum; a file
//! that fails any of them is refused with a message naming it.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::io::{atomic_write, io_err};
use crate::{Error, Result};

const MAGIC: [u8; 8] = *b"ASYBCKPT";
const VERSION: u32 = 1;
const SUFFIX: &str = ".asyb-ckpt";
/// Checkpoints kept in the directory after a new one is written.
const KEEP: usize = 2;

/// The state a run resumes from.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// Global step k (block updates applied).
    pub updates: u64,
    /// Minibatch rows pushed so far.
    pub samples: u64,
    /// Training time so far (evaluation excluded).
    pub train_secs: f64,
    /// What the run trains: the data's fingerprint and the objective's settings.
    pub key: String,
    pub weights: Vec<f64>,
}

#[derive(Serialize, Deserialize)]
struct Header {
    updates: u64,
    samples: u64,
    train_secs: f64,
    key: String,
    weights: u64,
}

fn file_name(updates: u64) -> String {
    format!("ckpt-{updates:020}{SUFFIX}")
}

/// Writes `cp` into `dir` (created if missing) and removes all but the newest
/// [`KEEP`] checkpoints. Returns the new file's path.
pub fn write(dir: &Path, cp: &Checkpoint) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let path = dir.join(file_name(cp.updates));
    let header = serde_json::to_vec(&Header {
        updates: cp.updates,
        samples: cp.samples,
        train_secs: cp.train_secs,
        key: cp.key.clone(),
        weights: cp.weights.len() as u64,
    })
    .map_err(|e| Error::config("checkpoint", e.to_string()))?;
    let mut head = Vec::with_capacity(16 + header.len());
    head.extend_from_slice(&MAGIC);
    head.extend_from_slice(&VERSION.to_le_bytes());
    head.extend_from_slice(&(header.len() as u32).to_le_bytes());
    head.extend_from_slice(&header);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&head);
    let body: Vec<u8> = cp.weights.iter().flat_map(|w| w.to_le_bytes()).collect();
    crc.update(&body);
    let sum = crc.finalize();
    atomic_write(&path, |w: &mut dyn Write| {
        w.write_all(&head).map_err(io_err(&path))?;
        w.write_all(&body).map_err(io_err(&path))?;
        w.write_all(&sum.to_le_bytes()).map_err(io_err(&path))
    })?;
    let mut all = list(dir)?;
    all.sort_by_key(|(k, _)| std::cmp::Reverse(*k));
    for (_, old) in all.into_iter().skip(KEEP) {
        let _ = std::fs::remove_file(old);
    }
    Ok(path)
}

/// Checkpoint files in `dir` with their step, in no particular order.
fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(|e| Error::io(dir, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(k) = name
            .strip_prefix("ckpt-")
            .and_then(|r| r.strip_suffix(SUFFIX))
            .and_then(|d| d.parse::<u64>().ok())
        {
            out.push((k, e.path()));
        }
    }
    Ok(out)
}

/// Reads and checks one checkpoint file.
pub fn read(path: &Path) -> Result<Checkpoint> {
    let bad = |reason: &str| Error::Data {
        path: path.into(),
        reason: format!("not a usable checkpoint: {reason}"),
    };
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if bytes.len() < 20 || bytes[..8] != MAGIC {
        return Err(bad("wrong magic bytes or too short"));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(bad(&format!(
            "format version {version}, this asyb reads version {VERSION}"
        )));
    }
    let hlen = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes")) as usize;
    let (body, tail) = bytes.split_at(bytes.len() - 4);
    let stored = u32::from_le_bytes(tail.try_into().expect("4 bytes"));
    if 16 + hlen > body.len() {
        return Err(bad("truncated header"));
    }
    let header: Header = serde_json::from_slice(&body[16..16 + hlen])
        .map_err(|_| bad("unreadable header (corrupted)"))?;
    let weights = &body[16 + hlen..];
    let n = usize::try_from(header.weights).map_err(|_| bad("weight count"))?;
    if weights.len() != n.saturating_mul(8) {
        return Err(bad(&format!(
            "{} bytes of weights where the header says {n} weights (truncated or corrupted)",
            weights.len()
        )));
    }
    if crc32fast::hash(body) != stored {
        return Err(bad("checksum mismatch (corrupted)"));
    }
    Ok(Checkpoint {
        updates: header.updates,
        samples: header.samples,
        train_secs: header.train_secs,
        key: header.key,
        weights: weights
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect(),
    })
}

/// The newest checkpoint in `dir`, checked; an error if there is none or if the newest
/// is damaged (a complete file never is: they are renamed into place).
/// The newest checkpoint in `dir`, if it belongs to the run named `key` with `coords`
/// weights; otherwise a one-line error naming the file and both runs.
pub fn resume(dir: &Path, key: &str, coords: usize) -> Result<Checkpoint> {
    let (path, cp) = newest(dir)?;
    if cp.key != key || cp.weights.len() != coords {
        return Err(Error::Data {
            path,
            reason: format!(
                "a checkpoint of another run: it trained [{}], this run trains [{key}]",
                cp.key
            ),
        });
    }
    Ok(cp)
}

pub fn newest(dir: &Path) -> Result<(PathBuf, Checkpoint)> {
    let mut all = list(dir)?;
    all.sort_by_key(|(k, _)| std::cmp::Reverse(*k));
    let (_, path) = all.into_iter().next().ok_or_else(|| Error::Data {
        path: dir.into(),
        reason: "no checkpoint (ckpt-*.asyb-ckpt) to resume from".into(),
    })?;
    let cp = read(&path)?;
    Ok((path, cp))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(updates: u64) -> Checkpoint {
        Checkpoint {
            updates,
            samples: updates * 256,
            train_secs: 1.5,
            key: "data 1 | logistic".into(),
            weights: (0..100).map(|i| i as f64 * 0.25 - 3.0).collect(),
        }
    }

    #[test]
    fn round_trip_and_only_the_newest_two_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        for k in [10, 200, 3000] {
            write(dir.path(), &sample(k)).unwrap();
        }
        let (path, cp) = newest(dir.path()).unwrap();
        assert_eq!(cp, sample(3000));
        assert!(path.ends_with(file_name(3000)));
        let mut kept: Vec<u64> = list(dir.path()).unwrap().into_iter().map(|p| p.0).collect();
        kept.sort_unstable();
        assert_eq!(kept, vec![200, 3000]);
    }

    #[test]
    fn damaged_files_are_refused_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), &sample(7)).unwrap();
        let good = std::fs::read(&path).unwrap();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (good[..good.len() - 9].to_vec(), "truncated"),
            (
                {
                    let mut b = good.clone();
                    let i = b.len() - 20;
                    b[i] ^= 1;
                    b
                },
                "checksum",
            ),
            (b"ASYBCSR\0xxxxxxxxxxxxxxxx".to_vec(), "magic"),
            (Vec::new(), "magic"),
        ];
        for (bytes, why) in cases {
            std::fs::write(&path, &bytes).unwrap();
            let e = newest(dir.path()).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
            assert!(e.contains(&path.display().to_string()), "{e}");
        }
        let empty = tempfile::tempdir().unwrap();
        let e = newest(empty.path()).unwrap_err().to_string();
        assert!(e.contains("no checkpoint"), "{e}");
    }
}
