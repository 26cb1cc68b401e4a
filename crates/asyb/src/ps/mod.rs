//! The parameter server: block partition, shards that own blocks and apply proximal
//! steps, the worker loop, and the transports between them. Knows nothing of file
//! formats.

pub mod blocks;
pub mod shard;
pub mod transport;
pub mod worker;
