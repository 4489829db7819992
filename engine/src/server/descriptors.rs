//! File descriptors: the daemon must never run out of them where it matters.
//!
//! Each connection holds one descriptor; the WAL, RocksDB, the metrics endpoint and the
//! runtime hold a bounded number more. At start the soft `RLIMIT_NOFILE` is raised to the
//! hard one, and a config whose `connections_max` plus those reserves does not fit is
//! refused, naming both numbers. Since every other holder is bounded too (RocksDB's open
//! files by [`crate::store::OPEN_FILES_MAX`], metrics scrapes, connections being told
//! `busy`), accepting connections can never take the descriptor the WAL needs to open its
//! next segment.

use super::ServerError;
use crate::config::ConfigError;

/// Descriptors kept for everything but client connections: RocksDB's table files and its
/// own (manifest, log, lock, options), the WAL's segment and directory handles, the
/// metrics endpoint's scrapers, connections being refused, the listeners, stdio, the
/// runtime's epoll and event descriptors, with room to spare.
pub(crate) const RESERVED: u64 = crate::store::OPEN_FILES_MAX as u64
    + 64 // RocksDB besides table files
    + 16 // WAL
    + 64 // metrics scrapers (metrics::http::CONNECTIONS_MAX)
    + super::REJECTING_MAX as u64
    + 64; // listeners, stdio, epoll, eventfds, spare

/// Raise the soft descriptor limit to the hard one and check that `connections_max`
/// connections fit beside [`RESERVED`]. Returns the limit now in force.
pub(crate) fn ensure(connections_max: u32) -> Result<u64, ServerError> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        let error = std::io::Error::last_os_error();
        return Err(ServerError::Descriptors(error));
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own; raising the soft limit up to the
        // hard one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        } else {
            let error = std::io::Error::last_os_error();
            tracing::warn!(%error, soft = limit.rlim_cur, hard = limit.rlim_max,
                "cannot raise the soft file descriptor limit to the hard one");
        }
    }
    let soft: u64 = limit.rlim_cur;
    let needed = u64::from(connections_max) + RESERVED;
    if needed > soft {
        return Err(ServerError::Config(ConfigError::Invalid {
            key: "connections_max".into(),
            value: connections_max.to_string(),
            reason: format!(
                "{connections_max} connections need {needed} file descriptors with the \
                 {RESERVED} the WAL, RocksDB and the rest keep, but the limit (RLIMIT_NOFILE) \
                 is {soft}: raise `ulimit -n` or lower connections_max to {}",
                soft.saturating_sub(RESERVED)
            ),
        }));
    }
    Ok(soft)
}
