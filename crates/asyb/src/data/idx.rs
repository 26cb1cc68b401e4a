//! IDX files (the MNIST and Fashion-MNIST format): an images file and a labels file,
//! plain or gzip-compressed, read into a [`Dataset`] with one feature per pixel, value
//! `pixel / 255`, zero pixels omitted, and the class index as label. Owns the IDX
//! format only.
//!
//! An IDX file is a big-endian header, `0 0 type ndims`, then `ndims` u32 sizes, then
//! the values in row-major order. Images are type 0x08 (u8) with 3 dimensions (n, rows,
//! cols); labels are type 0x08 with 1 dimension (n).

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use crate::data::Dataset;
use crate::{Error, Result};

fn open(path: &Path) -> Result<Box<dyn Read>> {
    let mut f = BufReader::new(File::open(path).map_err(|e| Error::io(path, e))?);
    let mut magic = [0u8; 2];
    let n = {
        use std::io::BufRead;
        let buf = f.fill_buf().map_err(|e| Error::io(path, e))?;
        let n = buf.len().min(2);
        magic[..n].copy_from_slice(&buf[..n]);
        n
    };
    if n == 2 && magic == [0x1f, 0x8b] {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(f)))
    } else {
        Ok(Box::new(f))
    }
}

/// Reads an IDX file of u8 values: its dimensions and its values.
fn read_u8_idx(path: &Path, want_dims: usize) -> Result<(Vec<usize>, Vec<u8>)> {
    let bad = |reason: String| Error::Data {
        path: path.into(),
        reason: format!("not an IDX file of bytes: {reason}"),
    };
    let mut r = open(path)?;
    let mut head = [0u8; 4];
    r.read_exact(&mut head)
        .map_err(|e| bad(format!("header: {e}")))?;
    if head[0] != 0 || head[1] != 0 || head[2] != 0x08 {
        return Err(bad(format!("magic {head:02x?}")));
    }
    if head[3] as usize != want_dims {
        return Err(bad(format!(
            "{} dimensions where {want_dims} were expected",
            head[3]
        )));
    }
    let mut dims = Vec::with_capacity(want_dims);
    for _ in 0..want_dims {
        let mut b = [0u8; 4];
        r.read_exact(&mut b)
            .map_err(|e| bad(format!("header: {e}")))?;
        dims.push(u32::from_be_bytes(b) as usize);
    }
    let total = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&t| t <= 1 << 34)
        .ok_or_else(|| bad(format!("dimensions {dims:?} too large")))?;
    let mut data = Vec::with_capacity(total);
    r.by_ref()
        .take(total as u64)
        .read_to_end(&mut data)
        .map_err(|e| bad(format!("corrupt or truncated: {e}")))?;
    if data.len() != total {
        return Err(bad(format!("truncated: {} of {total} values", data.len())));
    }
    let mut extra = [0u8; 1];
    if r.read(&mut extra).map_err(|e| bad(format!("{e}")))? != 0 {
        return Err(bad(format!(
            "more than the {total} values its header announces"
        )));
    }
    Ok((dims, data))
}

/// Reads an images file and its labels file into a dataset.
pub fn read_idx(images: &Path, labels: &Path) -> Result<Dataset> {
    let (idims, pixels) = read_u8_idx(images, 3)?;
    let (ldims, ys) = read_u8_idx(labels, 1)?;
    if idims[0] != ldims[0] {
        return Err(Error::Data {
            path: labels.into(),
            reason: format!(
                "{} labels for {} images in {}",
                ldims[0],
                idims[0],
                images.display()
            ),
        });
    }
    let features = idims[1] * idims[2];
    if features == 0 || features > u32::MAX as usize {
        return Err(Error::Data {
            path: images.into(),
            reason: format!("images of {} x {} pixels", idims[1], idims[2]),
        });
    }
    let mut ds = Dataset::new(features);
    for (img, &y) in pixels.chunks_exact(features).zip(&ys) {
        ds.push_row(
            f32::from(y),
            img.iter()
                .enumerate()
                .filter(|(_, &p)| p != 0)
                .map(|(j, &p)| (j as u32, f32::from(p) / 255.0)),
        );
    }
    Ok(ds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn reads_pixels_and_labels_plain_and_gzip() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let img = idx(&[2, 2, 3], &[0, 255, 0, 51, 0, 0, 0, 0, 0, 0, 0, 102]);
        let lab = idx(&[2], &[7, 3]);
        let (pi, pl) = (dir.path().join("i"), dir.path().join("l.gz"));
        std::fs::write(&pi, &img).unwrap();
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&lab).unwrap();
        std::fs::write(&pl, enc.finish().unwrap()).unwrap();
        let ds = read_idx(&pi, &pl).unwrap();
        let expect =
            Dataset::from_rows(6, &[(7.0, vec![(1, 1.0), (3, 0.2)]), (3.0, vec![(5, 0.4)])]);
        assert_eq!(ds, expect);
    }

    #[test]
    fn bad_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (pi, pl) = (dir.path().join("i"), dir.path().join("l"));
        std::fs::write(&pl, idx(&[2], &[1, 2])).unwrap();
        for (img, needle) in [
            (idx(&[2, 2, 2], &[0; 7]), "truncated"),
            (idx(&[2, 2, 2], &[0; 9]), "more than"),
            (idx(&[2, 4], &[0; 8]), "dimensions"),
            (b"P5 2 2".to_vec(), "magic"),
            (idx(&[3, 1, 1], &[0; 3]), "3 images"),
        ] {
            std::fs::write(&pi, &img).unwrap();
            let e = read_idx(&pi, &pl).unwrap_err().to_string();
            assert!(e.contains(needle), "{e} lacks {needle}");
        }
    }
}
