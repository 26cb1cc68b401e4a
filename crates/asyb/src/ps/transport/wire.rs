//! The byte form of the messages between ranks: a kind byte, then fixed-width
//! little-endian fields and length-prefixed arrays. Decoding checks every length, so a
//! damaged or foreign message is an error, never a panic or a read past the end.

use crate::{Error, Result};

/// A message being written.
#[derive(Debug, Default)]
pub struct Enc(Vec<u8>);

impl Enc {
    /// A message of `kind` with room for `bytes` more.
    pub fn new(kind: u8, bytes: usize) -> Self {
        let mut v = Vec::with_capacity(1 + bytes);
        v.push(kind);
        Enc(v)
    }

    pub fn u8(mut self, x: u8) -> Self {
        self.0.push(x);
        self
    }

    pub fn u32(mut self, x: u32) -> Self {
        self.0.extend_from_slice(&x.to_le_bytes());
        self
    }

    pub fn u64(mut self, x: u64) -> Self {
        self.0.extend_from_slice(&x.to_le_bytes());
        self
    }

    pub fn f64(mut self, x: f64) -> Self {
        self.0.extend_from_slice(&x.to_le_bytes());
        self
    }

    /// A length-prefixed array of `f64`.
    pub fn f64s(mut self, xs: &[f64]) -> Self {
        self = self.u64(xs.len() as u64);
        self.0.reserve(xs.len() * 8);
        for x in xs {
            self.0.extend_from_slice(&x.to_le_bytes());
        }
        self
    }

    /// A length-prefixed array of `u64`.
    pub fn u64s(mut self, xs: &[u64]) -> Self {
        self = self.u64(xs.len() as u64);
        for x in xs {
            self.0.extend_from_slice(&x.to_le_bytes());
        }
        self
    }

    /// A length-prefixed array of `(u32, u32)` pairs.
    pub fn u32_pairs(mut self, xs: impl ExactSizeIterator<Item = (u32, u32)>) -> Self {
        self = self.u64(xs.len() as u64);
        self.0.reserve(xs.len() * 8);
        for (a, b) in xs {
            self.0.extend_from_slice(&a.to_le_bytes());
            self.0.extend_from_slice(&b.to_le_bytes());
        }
        self
    }

    /// A length-prefixed sparse vector of `(u32, f64)` entries.
    pub fn sparse(mut self, xs: &[(u32, f64)]) -> Self {
        self = self.u64(xs.len() as u64);
        self.0.reserve(xs.len() * 12);
        for (c, g) in xs {
            self.0.extend_from_slice(&c.to_le_bytes());
            self.0.extend_from_slice(&g.to_le_bytes());
        }
        self
    }

    /// A length-prefixed UTF-8 string.
    pub fn str(mut self, s: &str) -> Self {
        self = self.u64(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
        self
    }

    pub fn bytes(self) -> Vec<u8> {
        self.0
    }
}

/// A message being read.
#[derive(Debug)]
pub struct Dec<'a> {
    buf: &'a [u8],
    pos: usize,
}

fn malformed(what: &str) -> Error {
    Error::Runtime {
        role: "transport",
        id: 0,
        reason: format!("malformed message: {what}"),
    }
}

impl<'a> Dec<'a> {
    /// Reads `buf`; returns the reader and the message kind.
    pub fn new(buf: &'a [u8]) -> Result<(u8, Self)> {
        let (&kind, _) = buf.split_first().ok_or_else(|| malformed("empty"))?;
        Ok((kind, Dec { buf, pos: 1 }))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| malformed("truncated"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }

    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub fn f64(&mut self) -> Result<f64> {
        Ok(f64::from_le_bytes(self.array()?))
    }

    /// The length of an array of `width`-byte items, checked against what is left.
    fn len(&mut self, width: usize) -> Result<usize> {
        let n = self.u64()?;
        let n = usize::try_from(n).map_err(|_| malformed("length"))?;
        let left = self.buf.len() - self.pos;
        if n.checked_mul(width).map_or(true, |b| b > left) {
            return Err(malformed("array longer than the message"));
        }
        Ok(n)
    }

    pub fn f64s(&mut self) -> Result<Vec<f64>> {
        let n = self.len(8)?;
        let raw = self.take(n * 8)?;
        Ok(raw
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect())
    }

    /// An `f64` array of exactly `out.len()` items, into `out`.
    pub fn f64s_into(&mut self, out: &mut [f64]) -> Result<()> {
        let n = self.len(8)?;
        if n != out.len() {
            return Err(malformed("array of the wrong length"));
        }
        let raw = self.take(n * 8)?;
        for (o, c) in out.iter_mut().zip(raw.chunks_exact(8)) {
            *o = f64::from_le_bytes(c.try_into().expect("8 bytes"));
        }
        Ok(())
    }

    pub fn u64s(&mut self) -> Result<Vec<u64>> {
        let n = self.len(8)?;
        let raw = self.take(n * 8)?;
        Ok(raw
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect())
    }

    pub fn u32_pairs(&mut self) -> Result<Vec<(u32, u32)>> {
        let n = self.len(8)?;
        let raw = self.take(n * 8)?;
        Ok(raw
            .chunks_exact(8)
            .map(|c| {
                (
                    u32::from_le_bytes(c[..4].try_into().expect("4 bytes")),
                    u32::from_le_bytes(c[4..].try_into().expect("4 bytes")),
                )
            })
            .collect())
    }

    /// A sparse vector into `out` (cleared first).
    pub fn sparse_into(&mut self, out: &mut Vec<(u32, f64)>) -> Result<()> {
        let n = self.len(12)?;
        let raw = self.take(n * 12)?;
        out.clear();
        out.extend(raw.chunks_exact(12).map(|c| {
            (
                u32::from_le_bytes(c[..4].try_into().expect("4 bytes")),
                f64::from_le_bytes(c[4..].try_into().expect("8 bytes")),
            )
        }));
        Ok(())
    }

    pub fn str(&mut self) -> Result<String> {
        let n = self.len(1)?;
        let raw = self.take(n)?;
        String::from_utf8(raw.to_vec()).map_err(|_| malformed("string not UTF-8"))
    }

    /// Checks that nothing is left.
    pub fn end(&self) -> Result<()> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(malformed("trailing bytes"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip() {
        let grad = [(3u32, -0.5f64), (70_000, 1e-300)];
        let msg = Enc::new(7, 0)
            .u8(9)
            .u32(u32::MAX)
            .u64(1 << 40)
            .f64(-2.25)
            .f64s(&[1.0, f64::MAX])
            .u64s(&[5, 6])
            .u32_pairs([(1, 2), (3, 4)].into_iter())
            .sparse(&grad)
            .str("rank ü")
            .bytes();
        let (kind, mut d) = Dec::new(&msg).unwrap();
        assert_eq!(kind, 7);
        assert_eq!(d.u8().unwrap(), 9);
        assert_eq!(d.u32().unwrap(), u32::MAX);
        assert_eq!(d.u64().unwrap(), 1 << 40);
        assert_eq!(d.f64().unwrap(), -2.25);
        assert_eq!(d.f64s().unwrap(), vec![1.0, f64::MAX]);
        assert_eq!(d.u64s().unwrap(), vec![5, 6]);
        assert_eq!(d.u32_pairs().unwrap(), vec![(1, 2), (3, 4)]);
        let mut g = vec![(0, 0.0)];
        d.sparse_into(&mut g).unwrap();
        assert_eq!(g, grad);
        assert_eq!(d.str().unwrap(), "rank ü");
        d.end().unwrap();
    }

    #[test]
    fn damaged_messages_are_errors() {
        let msg = Enc::new(1, 0).f64s(&[1.0, 2.0, 3.0]).bytes();
        // Every truncation fails cleanly.
        for cut in 0..msg.len() {
            let r = Dec::new(&msg[..cut]).and_then(|(_, mut d)| d.f64s());
            assert!(r.is_err(), "cut at {cut}");
        }
        // A length far beyond the message.
        let bad = Enc::new(1, 0).u64(u64::MAX).bytes();
        let (_, mut d) = Dec::new(&bad).unwrap();
        assert!(d.f64s().is_err());
        // Wrong length into a fixed buffer, and trailing bytes.
        let (_, mut d) = Dec::new(&msg).unwrap();
        assert!(d.f64s_into(&mut [0.0; 2]).is_err());
        let (_, d) = Dec::new(&msg).unwrap();
        assert!(d.end().is_err());
    }
}
