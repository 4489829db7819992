//! The standard Prometheus process metrics, read from /proc (Linux): CPU time, resident
//! memory, open and allowed file descriptors, start time. Elsewhere nothing is recorded.

pub const CPU_SECONDS_TOTAL: &str = "process_cpu_seconds_total";
pub const RESIDENT_MEMORY_BYTES: &str = "process_resident_memory_bytes";
pub const OPEN_FDS: &str = "process_open_fds";
pub const MAX_FDS: &str = "process_max_fds";
pub const START_TIME_SECONDS: &str = "process_start_time_seconds";

pub fn describe() {
    use metrics::{describe_counter, describe_gauge, Unit};
    describe_counter!(
        CPU_SECONDS_TOTAL,
        Unit::Seconds,
        "CPU time used, user and system"
    );
    describe_gauge!(RESIDENT_MEMORY_BYTES, Unit::Bytes, "Resident memory");
    describe_gauge!(OPEN_FDS, "Open file descriptors");
    describe_gauge!(MAX_FDS, "File descriptor limit (soft)");
    describe_gauge!(
        START_TIME_SECONDS,
        Unit::Seconds,
        "Unix time the process started"
    );
}

/// What one reading of /proc gave.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub open_fds: u64,
    pub max_fds: u64,
    pub start_time_seconds: f64,
}

/// Read this process's figures; `None` where /proc is not available.
#[cfg(target_os = "linux")]
pub fn read() -> Option<ProcessStats> {
    // SAFETY: sysconf only reads a system constant.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    // SAFETY: as above.
    let page_bytes = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if ticks_per_second <= 0 || page_bytes <= 0 {
        return None;
    }
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // stat(5): utime and stime are fields 14 and 15, starttime 22, rss 24 (1-based, the
    // command being field 2): indexes 11, 12, 19, 21 after it.
    let ticks = |index: usize| fields.get(index)?.parse::<u64>().ok();
    let cpu_ticks = ticks(11)? + ticks(12)?;
    let start_ticks = ticks(19)?;
    let rss_pages = ticks(21)?;
    let boot_seconds = boot_time_seconds()?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    let max_fds = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur
    } else {
        0
    };
    Some(ProcessStats {
        cpu_seconds: cpu_ticks as f64 / ticks_per_second as f64,
        resident_bytes: rss_pages * page_bytes as u64,
        open_fds,
        max_fds,
        start_time_seconds: boot_seconds + start_ticks as f64 / ticks_per_second as f64,
    })
}

#[cfg(not(target_os = "linux"))]
pub fn read() -> Option<ProcessStats> {
    None
}

#[cfg(target_os = "linux")]
fn boot_time_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|line| line.starts_with("btime "))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Record a reading. The facade's counters are integers, so CPU time counts whole seconds
/// (as the `metrics-process` crate does): `rate()` over a minute is within 2%.
pub fn record(stats: &ProcessStats) {
    metrics::counter!(CPU_SECONDS_TOTAL).absolute(stats.cpu_seconds as u64);
    metrics::gauge!(RESIDENT_MEMORY_BYTES).set(stats.resident_bytes as f64);
    metrics::gauge!(OPEN_FDS).set(stats.open_fds as f64);
    metrics::gauge!(MAX_FDS).set(stats.max_fds as f64);
    metrics::gauge!(START_TIME_SECONDS).set(stats.start_time_seconds);
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn reading_this_process_gives_plausible_figures() {
        let stats = super::read().expect("/proc is readable");
        assert!(stats.resident_bytes > 1 << 20, "{stats:?}");
        assert!(
            stats.open_fds >= 3 && stats.open_fds <= stats.max_fds,
            "{stats:?}"
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(stats.start_time_seconds <= now + 1.0, "{stats:?}");
        assert!(
            stats.start_time_seconds > now - 86_400.0 * 365.0,
            "{stats:?}"
        );
    }
}
