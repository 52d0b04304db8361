//! The node's file descriptor budget: how the open file limit (`RLIMIT_NOFILE`) is shared between the store,
//! everything else the node opens, and the BTP sockets it accepts.
//!
//! Running out of descriptors is worse than refusing a socket: RocksDB opens files when it switches to a new
//! WAL or writes a table file, and a write that fails there poisons the store (see [`crate::store::db`]), so
//! every payment stops until a restart. The budget, computed once at start from the soft limit (raised first
//! to what the node can use, within the hard limit), is therefore:
//!
//! ```text
//! soft limit = store (RocksDB max_open_files + FDS_BEYOND_MAX_OPEN_FILES)
//!            + reserved (RESERVED_FDS_BASE + RESERVED_FDS_PER_DIALING_PEER × peers we dial)
//!            + accepted BTP sockets (unauthenticated pool + authenticated pool)
//! ```
//!
//! The accepted sockets get only what is left, capped by the transport's defaults; the transport enforces
//! the two pools and per-address limits ([`btp::transport::ConnectionLimits`]). A limit too small for a
//! minimal budget is refused at start.

use btp::transport::{
    ConnectionLimits, DEFAULT_MAX_AUTHENTICATED_SOCKETS, DEFAULT_MAX_SOCKETS_PER_PEER,
    DEFAULT_MAX_UNAUTHENTICATED_PER_ADDRESS, DEFAULT_MAX_UNAUTHENTICATED_SOCKETS,
};

use crate::store::db::{
    DbOptions, DEFAULT_MAX_OPEN_FILES, FDS_BEYOND_MAX_OPEN_FILES, MIN_MAX_OPEN_FILES,
};

/// Descriptors kept for everything that is neither the store, an accepted BTP socket nor an HTTP server's
/// connection ([`FdDemand::http_connections`]): stdin/out/err, the async runtime's epoll and wake-up handles,
/// the listening sockets, the settlement engine's connector and ledger clients, DNS lookups.
pub const RESERVED_FDS_BASE: u64 = 96;

/// Descriptors kept per peer we dial: its socket, plus one for a redial while the old socket is closing.
pub const RESERVED_FDS_PER_DIALING_PEER: u64 = 2;

/// Share of the soft limit, in percent, given to RocksDB's table cache (`max_open_files`), between
/// [`MIN_MAX_OPEN_FILES`] and [`DEFAULT_MAX_OPEN_FILES`]: enough to keep a node's tables open under a small
/// limit without starving its sockets.
pub const STORE_SHARE_PERCENT: u64 = 25;

/// Share of the accepted-socket budget, in percent, for sockets that have not authenticated yet (up to
/// [`DEFAULT_MAX_UNAUTHENTICATED_SOCKETS`]); the rest is for authenticated ones.
pub const UNAUTHENTICATED_SHARE_PERCENT: u64 = 25;

/// Fewest accepted BTP sockets a node starts with: below this the limit is refused as too small.
pub const MIN_ACCEPTED_SOCKETS: u64 = 16;

/// What a node's configuration needs besides the store and the BTP sockets it accepts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FdDemand {
    /// Peers the node dials (see [`RESERVED_FDS_PER_DIALING_PEER`]).
    pub dialing_peers: usize,
    /// Connections the node's HTTP servers (the settlement engine's APIs) may hold open at once: each server
    /// caps its own connections, and those caps must fit the budget too.
    pub http_connections: usize,
}

impl FdDemand {
    /// A node that dials `n` peers and runs no HTTP server.
    pub fn dialing(n: usize) -> FdDemand {
        FdDemand {
            dialing_peers: n,
            http_connections: 0,
        }
    }
}

/// Why no budget could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FdBudgetError {
    /// The soft limit cannot hold the store, the reserve and [`MIN_ACCEPTED_SOCKETS`].
    #[error(
        "the open file limit (RLIMIT_NOFILE) is {soft_limit}, and the node needs at least {needed}: raise the \
         hard limit (`ulimit -Hn`, systemd `LimitNOFILE=`, docker `--ulimit nofile=`)"
    )]
    TooSmall {
        /// The soft limit after raising it.
        soft_limit: u64,
        /// The smallest limit that works.
        needed: u64,
    },
}

/// How the node uses its descriptors (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdBudget {
    /// The soft limit the budget divides.
    pub soft_limit: u64,
    /// How the store is opened (its `max_open_files`).
    pub store: DbOptions,
    /// Descriptors kept for the store: `max_open_files` plus [`FDS_BEYOND_MAX_OPEN_FILES`].
    pub store_fds: u64,
    /// Descriptors kept for everything else (see [`RESERVED_FDS_BASE`]).
    pub reserved_fds: u64,
    /// The limits of the accepted BTP sockets.
    pub connections: ConnectionLimits,
}

impl FdBudget {
    /// The budget for `soft_limit` descriptors and what the node's configuration asks for besides accepted BTP
    /// sockets (`demand`).
    pub fn plan(soft_limit: u64, demand: FdDemand) -> Result<FdBudget, FdBudgetError> {
        let reserved_fds = reserved_fds(demand);
        let fixed = reserved_fds + u64::from(FDS_BEYOND_MAX_OPEN_FILES);
        let needed = fixed + u64::from(MIN_MAX_OPEN_FILES) + MIN_ACCEPTED_SOCKETS;
        if soft_limit < needed {
            return Err(FdBudgetError::TooSmall { soft_limit, needed });
        }
        // The store's share, but never so much that fewer than MIN_ACCEPTED_SOCKETS remain.
        let table_files = (soft_limit.saturating_mul(STORE_SHARE_PERCENT) / 100)
            .clamp(
                u64::from(MIN_MAX_OPEN_FILES),
                u64::from(DEFAULT_MAX_OPEN_FILES),
            )
            .min(soft_limit - fixed - MIN_ACCEPTED_SOCKETS);
        let store_fds = table_files + u64::from(FDS_BEYOND_MAX_OPEN_FILES);
        let accepted = soft_limit - reserved_fds - store_fds;
        let unauthenticated = (accepted.saturating_mul(UNAUTHENTICATED_SHARE_PERCENT) / 100)
            .clamp(1, DEFAULT_MAX_UNAUTHENTICATED_SOCKETS as u64);
        let authenticated =
            (accepted - unauthenticated).min(DEFAULT_MAX_AUTHENTICATED_SOCKETS as u64);
        let to_usize = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        Ok(FdBudget {
            soft_limit,
            store: DbOptions {
                max_open_files: u32::try_from(table_files).unwrap_or(DEFAULT_MAX_OPEN_FILES),
                ..DbOptions::default()
            },
            store_fds,
            reserved_fds,
            connections: ConnectionLimits {
                max_authenticated: to_usize(authenticated),
                max_unauthenticated: to_usize(unauthenticated),
                max_unauthenticated_per_address: DEFAULT_MAX_UNAUTHENTICATED_PER_ADDRESS
                    .min(to_usize(unauthenticated)),
                max_sockets_per_peer: DEFAULT_MAX_SOCKETS_PER_PEER,
            },
        })
    }

    /// The soft limit at which every part gets its ceiling; the node raises its limit to this (within the
    /// hard limit) and no further.
    pub fn wanted_soft_limit(demand: FdDemand) -> u64 {
        let accepted_max =
            DEFAULT_MAX_AUTHENTICATED_SOCKETS as u64 + DEFAULT_MAX_UNAUTHENTICATED_SOCKETS as u64;
        let store_max = u64::from(DEFAULT_MAX_OPEN_FILES) + u64::from(FDS_BEYOND_MAX_OPEN_FILES);
        // The store's share is a percentage of the whole limit: ask for enough that it reaches its ceiling.
        let for_store_share = u64::from(DEFAULT_MAX_OPEN_FILES) * 100 / STORE_SHARE_PERCENT;
        (reserved_fds(demand) + store_max + accepted_max).max(for_store_share)
    }

    /// Descriptors the budget gives out in all (never more than [`FdBudget::soft_limit`]).
    pub fn total_fds(&self) -> u64 {
        self.store_fds
            + self.reserved_fds
            + self.connections.max_authenticated as u64
            + self.connections.max_unauthenticated as u64
    }
}

fn reserved_fds(demand: FdDemand) -> u64 {
    let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    RESERVED_FDS_BASE
        .saturating_add(RESERVED_FDS_PER_DIALING_PEER.saturating_mul(count(demand.dialing_peers)))
        .saturating_add(count(demand.http_connections))
}

/// The open file limit before and after [`raise_nofile_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    /// The soft limit the process started with.
    pub soft_before: u64,
    /// The soft limit now.
    pub soft: u64,
    /// The hard limit (`None`: unlimited).
    pub hard: Option<u64>,
}

/// Raises the soft `RLIMIT_NOFILE` to `wanted`, or to the hard limit if that is lower; never lowers it.
/// A limit the system will not raise is kept (the error says why).
#[cfg(unix)]
pub fn raise_nofile_limit(wanted: u64) -> (NofileLimit, Option<std::io::Error>) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let current = getrlimit(Resource::Nofile);
    // `None` means unlimited.
    let soft_before = current.current.unwrap_or(u64::MAX);
    let target = current.maximum.map_or(wanted, |hard| wanted.min(hard));
    let mut limit = NofileLimit {
        soft_before,
        soft: soft_before,
        hard: current.maximum,
    };
    if target <= soft_before {
        return (limit, None);
    }
    match setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(target),
            maximum: current.maximum,
        },
    ) {
        Ok(()) => {
            limit.soft = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
            (limit, None)
        }
        Err(errno) => (limit, Some(errno.into())),
    }
}

/// Elsewhere the limit is left as it is and assumed to be the common default of 1024.
#[cfg(not(unix))]
pub fn raise_nofile_limit(_wanted: u64) -> (NofileLimit, Option<std::io::Error>) {
    (
        NofileLimit {
            soft_before: 1024,
            soft: 1024,
            hard: None,
        },
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_budget_fits_its_limit_and_keeps_the_store_reserve() -> Result<(), FdBudgetError> {
        for soft in [170, 200, 256, 512, 1024, 4096, 65_536, 1 << 20, u64::MAX] {
            for dialing in [0, 2, 10] {
                let Ok(b) = FdBudget::plan(soft, FdDemand::dialing(dialing)) else {
                    continue;
                };
                assert!(b.total_fds() <= soft, "{soft}/{dialing}: {b:?}");
                assert!(b.store.max_open_files >= MIN_MAX_OPEN_FILES);
                assert_eq!(
                    b.store_fds,
                    u64::from(b.store.max_open_files) + u64::from(FDS_BEYOND_MAX_OPEN_FILES)
                );
                let c = b.connections;
                assert!(
                    c.max_authenticated >= 1 && c.max_unauthenticated >= 1,
                    "{b:?}"
                );
                assert!(c.max_unauthenticated_per_address <= c.max_unauthenticated);
                assert!(c.max_authenticated <= DEFAULT_MAX_AUTHENTICATED_SOCKETS);
                assert!(c.max_unauthenticated <= DEFAULT_MAX_UNAUTHENTICATED_SOCKETS);
            }
        }
        Ok(())
    }

    #[test]
    fn a_256_descriptor_node_keeps_a_store_reserve_and_few_unauthenticated_sockets(
    ) -> Result<(), FdBudgetError> {
        let b = FdBudget::plan(256, FdDemand::dialing(0))?;
        assert_eq!(b.store.max_open_files, 64);
        assert_eq!(b.store_fds, 96);
        assert_eq!(b.reserved_fds, RESERVED_FDS_BASE);
        assert_eq!(
            b.connections.max_authenticated + b.connections.max_unauthenticated,
            (256 - 96 - RESERVED_FDS_BASE) as usize
        );
        assert_eq!(b.connections.max_unauthenticated, 16);
        assert_eq!(b.connections.max_unauthenticated_per_address, 8);
        Ok(())
    }

    #[test]
    fn the_wanted_limit_gives_every_part_its_ceiling() -> Result<(), FdBudgetError> {
        for dialing in [0, 3, 500] {
            let wanted = FdBudget::wanted_soft_limit(FdDemand::dialing(dialing));
            let b = FdBudget::plan(wanted, FdDemand::dialing(dialing))?;
            assert_eq!(b.store.max_open_files, DEFAULT_MAX_OPEN_FILES);
            assert_eq!(
                b.connections.max_authenticated,
                DEFAULT_MAX_AUTHENTICATED_SOCKETS
            );
            assert_eq!(
                b.connections.max_unauthenticated,
                DEFAULT_MAX_UNAUTHENTICATED_SOCKETS
            );
            // A larger limit changes nothing: the ceilings hold.
            assert_eq!(
                FdBudget::plan(wanted * 10, FdDemand::dialing(dialing))?.connections,
                b.connections
            );
        }
        Ok(())
    }

    #[test]
    fn a_limit_too_small_is_refused_with_the_smallest_that_works() {
        let needed = RESERVED_FDS_BASE
            + u64::from(MIN_MAX_OPEN_FILES)
            + u64::from(FDS_BEYOND_MAX_OPEN_FILES)
            + MIN_ACCEPTED_SOCKETS;
        assert_eq!(
            FdBudget::plan(100, FdDemand::dialing(0)),
            Err(FdBudgetError::TooSmall {
                soft_limit: 100,
                needed
            })
        );
        assert!(FdBudget::plan(needed - 1, FdDemand::dialing(0)).is_err());
        assert!(FdBudget::plan(needed, FdDemand::dialing(0)).is_ok());
        let message = FdBudget::plan(100, FdDemand::dialing(0))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(message.contains("RLIMIT_NOFILE") && message.contains(&needed.to_string()));
    }

    #[test]
    fn the_http_servers_connections_are_kept_out_of_the_accepted_sockets(
    ) -> Result<(), FdBudgetError> {
        let http = FdDemand {
            dialing_peers: 0,
            http_connections: 544,
        };
        let b = FdBudget::plan(2048, http)?;
        assert_eq!(b.reserved_fds, RESERVED_FDS_BASE + 544);
        assert!(b.total_fds() <= 2048, "{b:?}");
        // Too small for the engine's connections besides the minimum: refused, not overcommitted.
        assert!(FdBudget::plan(256, http).is_err());
        // The wanted limit still gives every part its ceiling.
        let wanted = FdBudget::wanted_soft_limit(http);
        let at_wanted = FdBudget::plan(wanted, http)?;
        assert_eq!(
            at_wanted.connections.max_authenticated,
            DEFAULT_MAX_AUTHENTICATED_SOCKETS
        );
        Ok(())
    }

    #[test]
    fn more_dialing_peers_take_from_the_accepted_sockets() -> Result<(), FdBudgetError> {
        let none = FdBudget::plan(1024, FdDemand::dialing(0))?;
        let some = FdBudget::plan(1024, FdDemand::dialing(50))?;
        assert_eq!(some.reserved_fds, none.reserved_fds + 100);
        assert!(
            some.connections.max_authenticated + some.connections.max_unauthenticated
                == none.connections.max_authenticated + none.connections.max_unauthenticated - 100
        );
        Ok(())
    }

    #[test]
    fn raising_the_limit_never_lowers_it() {
        let (limit, error) = raise_nofile_limit(1);
        assert!(error.is_none(), "{error:?}");
        assert_eq!(limit.soft, limit.soft_before);
    }
}
