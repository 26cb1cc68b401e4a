//! Training across processes: `mpirun -np N asyb train --backend mpi ...`.
//!
//! [`roles`] says which rank serves which blocks and which ranks are workers; with the
//! cargo feature `mpi`, `run` holds the run itself: rank 0 coordinates (it plans the
//! run from what the ranks report, monitors, evaluates, checkpoints and stops it) while
//! every rank, rank 0 included, runs an agent that hosts its server and worker
//! threads. Requests between workers and servers go over
//! [`crate::ps::transport::mpi`]; the algorithm is the in-process one: the same
//! [`crate::ps::shard::Shard`], the same worker loop.

pub mod roles;
#[cfg(feature = "mpi")]
mod run;

pub use roles::RoleMap;
#[cfg(feature = "mpi")]
pub use run::{Cluster, ClusterRun, OMPI_EAGER_LIMIT};
