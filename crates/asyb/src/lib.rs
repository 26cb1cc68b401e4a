//! asyb: train large sparse models with AsyB-ProxSGD (Zhu & Niu, arXiv 1810.09270),
//! asynchronous block-wise proximal stochastic gradient descent on a sharded parameter
//! server.
//!
//! Data flows one way: [`data`] -> [`ps::worker`] -> [`ps::transport`] -> [`ps::shard`],
//! and back for pulls; [`monitor`] reads snapshots beside it. [`model`] is math only.
//! The library never prints and never exits; the `asyb` binary does both.

pub mod alloc;
pub mod cd;
pub mod checkpoint;
pub mod cluster;
pub mod config;
pub mod data;
pub(crate) mod driver;
pub mod error;
pub mod fista;
pub mod hint;
pub mod io;
pub mod model;
pub mod model_file;
pub mod monitor;
pub mod par;
pub mod predict;
pub mod problem;
pub mod ps;
pub mod sim;
#[cfg(test)]
mod testing;
pub mod train;

pub use error::{Error, Result};

/// The value named `s` in a table of names, or the error every flag and config key
/// gives: "unknown {what} '{s}' (expected one of: a, b, c)".
pub(crate) fn parse_name<T: Copy>(
    names: &[(&'static str, T)],
    s: &str,
    what: &str,
) -> std::result::Result<T, String> {
    names
        .iter()
        .find(|(n, _)| *n == s)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let all: Vec<&str> = names.iter().map(|(n, _)| *n).collect();
            format!("unknown {what} '{s}' (expected one of: {})", all.join(", "))
        })
}
