//! Which rank does what. Servers are ranks `0..S`, block j lives on server `j mod S`.
//! Without colocation the other ranks are workers; with it, every rank is both a
//! server (for its share of the blocks) and a worker, so N ranks use N cores.

use crate::{Error, Result};

/// The roles of the ranks of one run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleMap {
    pub ranks: usize,
    pub servers: usize,
    pub colocate: bool,
}

impl RoleMap {
    /// Roles for `ranks` processes with `servers` server ranks, or every rank both a
    /// server and a worker. Refuses a launch that leaves no worker.
    pub fn new(ranks: usize, servers: usize, colocate: bool) -> Result<RoleMap> {
        if colocate {
            return Ok(RoleMap {
                ranks,
                servers: ranks,
                colocate,
            });
        }
        if servers == 0 {
            return Err(Error::config("servers", "must be at least 1"));
        }
        if servers >= ranks {
            return Err(Error::config(
                "servers",
                format!(
                    "{servers} server rank{} of {ranks} leave no worker: launch at least {} ranks (mpirun -np {}), or pass --colocate",
                    if servers == 1 { "" } else { "s" },
                    servers + 1,
                    servers + 1
                ),
            ));
        }
        Ok(RoleMap {
            ranks,
            servers,
            colocate,
        })
    }

    /// Number of workers W.
    pub fn workers(&self) -> usize {
        if self.colocate {
            self.ranks
        } else {
            self.ranks - self.servers
        }
    }

    /// The rank of worker `w`.
    pub fn worker_rank(&self, w: usize) -> usize {
        if self.colocate {
            w
        } else {
            self.servers + w
        }
    }

    /// The server index of `rank`, if it serves.
    pub fn server_of(&self, rank: usize) -> Option<usize> {
        (rank < self.servers).then_some(rank)
    }

    /// The worker index of `rank`, if it works.
    pub fn worker_of(&self, rank: usize) -> Option<usize> {
        if self.colocate {
            Some(rank)
        } else {
            rank.checked_sub(self.servers)
        }
    }

    /// One line for the start of a run, e.g. `3 ranks: rank 0 server 0; ranks 1-2
    /// workers 0-1`.
    pub fn describe(&self) -> String {
        let span = |a: usize, b: usize, one: &str, many: &str| {
            if a + 1 == b {
                format!("{one} {a}")
            } else {
                format!("{many} {a}-{}", b - 1)
            }
        };
        if self.colocate {
            format!(
                "{} rank{}, colocated: rank r serves server r and runs worker r",
                self.ranks,
                if self.ranks == 1 { "" } else { "s" }
            )
        } else {
            format!(
                "{} ranks: {} {}; {} {}",
                self.ranks,
                span(0, self.servers, "rank", "ranks"),
                span(0, self.servers, "server", "servers"),
                span(self.servers, self.ranks, "rank", "ranks"),
                span(0, self.workers(), "worker", "workers"),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_cover_every_rank() {
        let r = RoleMap::new(5, 2, false).unwrap();
        assert_eq!(r.workers(), 3);
        assert_eq!(
            (0..5).map(|k| r.server_of(k)).collect::<Vec<_>>(),
            [Some(0), Some(1), None, None, None]
        );
        assert_eq!(
            (0..5).map(|k| r.worker_of(k)).collect::<Vec<_>>(),
            [None, None, Some(0), Some(1), Some(2)]
        );
        for w in 0..3 {
            assert_eq!(r.worker_of(r.worker_rank(w)), Some(w));
        }
        assert_eq!(
            r.describe(),
            "5 ranks: ranks 0-1 servers 0-1; ranks 2-4 workers 0-2"
        );
        assert_eq!(
            RoleMap::new(3, 1, false).unwrap().describe(),
            "3 ranks: rank 0 server 0; ranks 1-2 workers 0-1"
        );
        let c = RoleMap::new(2, 1, true).unwrap();
        assert_eq!((c.servers, c.workers()), (2, 2));
        assert_eq!(
            (c.server_of(1), c.worker_of(1), c.worker_rank(1)),
            (Some(1), Some(1), 1)
        );
    }

    #[test]
    fn launches_without_a_worker_are_refused() {
        for (n, s) in [(1, 1), (2, 2), (3, 5)] {
            let e = RoleMap::new(n, s, false).unwrap_err().to_string();
            assert!(e.contains("leave no worker"), "{e}");
        }
        assert!(RoleMap::new(4, 0, false).is_err());
        assert!(RoleMap::new(1, 1, true).is_ok());
    }
}
