//! What a process that runs the engine sets up before its first thread, in
//! both shells (`vigil` and `vigil-desktop`).

/// Tunes the allocator and raises the open-file limit. Call first thing in
/// `main`, before any other thread exists.
pub fn prepare() {
    limit_malloc_arenas();
    raise_open_file_limit();
}

/// glibc gives each thread that allocates its own arena (up to 8 per core), and
/// memory freed into one arena is not reused by another: under load that alone
/// added ~48 MiB to `vigil serve`'s peak RSS (178 → 130 MiB in `vigil bench
/// ingest`, same throughput; see BENCHMARKS.md). Two arenas are enough for
/// two busy threads (the tokio workers and the SQLite writer).
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; it is called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Raises the soft limit of open files to the hard one: every MQTT client
/// holds three descriptors (its socket, and both ends of the front door's
/// loopback connection to the router), and the usual soft limit (1024) would
/// refuse a few hundred devices. The hard limit still applies; past it,
/// connections are refused with "Too many open files" in the log.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

#[cfg(test)]
mod tests {
    fn nofile() -> libc::rlimit {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct given.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        limit
    }

    #[test]
    fn a_desktop_sessions_open_file_limit_is_raised_to_the_hard_one() {
        let hard = nofile().rlim_max;
        let session = libc::rlimit {
            rlim_cur: 256.min(hard),
            rlim_max: hard,
        };
        // SAFETY: setrlimit reads the struct given (a lower soft limit is always allowed).
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &session) }, 0);
        super::raise_open_file_limit();
        assert_eq!(nofile().rlim_cur, hard);
    }
}
