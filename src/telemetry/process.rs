//! The standard `process_*` metrics, read from `/proc/self` at each scrape
//! (Linux; elsewhere they are absent).

use super::names;

/// What one reading of `/proc/self` found; a value that could not be read
/// is `None` and its metric is left as it was.
#[derive(Debug, Default, PartialEq)]
pub struct Reading {
    pub resident_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    pub cpu_seconds: Option<f64>,
    pub threads: Option<u64>,
    pub start_time_seconds: Option<f64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
}

/// Reads the process's figures and sets the metrics; returns the CPU
/// seconds, which the recorder cannot hold as a fraction (its counters are
/// integers) and the scrape renders itself ([`cpu_lines`]).
pub fn collect() -> Option<f64> {
    let r = read();
    let set = |name: &'static str, value: Option<f64>| {
        if let Some(v) = value {
            metrics::gauge!(name).set(v);
        }
    };
    set(
        names::PROCESS_RESIDENT_MEMORY,
        r.resident_bytes.map(|v| v as f64),
    );
    set(
        names::PROCESS_VIRTUAL_MEMORY,
        r.virtual_bytes.map(|v| v as f64),
    );
    set(names::PROCESS_THREADS, r.threads.map(|v| v as f64));
    set(names::PROCESS_START_TIME, r.start_time_seconds);
    set(names::PROCESS_OPEN_FDS, r.open_fds.map(|v| v as f64));
    set(names::PROCESS_MAX_FDS, r.max_fds.map(|v| v as f64));
    r.cpu_seconds
}

/// `process_cpu_seconds_total` in the text format, with its fraction.
pub fn cpu_lines(cpu_seconds: f64) -> String {
    let family = super::FAMILIES
        .iter()
        .find(|f| f.name == names::PROCESS_CPU_SECONDS);
    let help = family.map_or("", |f| f.help);
    format!(
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {cpu_seconds}\n",
        name = names::PROCESS_CPU_SECONDS
    )
}

#[cfg(target_os = "linux")]
fn read() -> Reading {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    // SAFETY: as above.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| boot_time(&s));
    let mut reading = parse_stat(&stat, ticks as f64, page as u64, boot);
    reading.open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|dir| dir.count() as u64);
    reading.max_fds = max_fds();
    reading
}

#[cfg(not(target_os = "linux"))]
fn read() -> Reading {
    Reading::default()
}

#[cfg(target_os = "linux")]
fn max_fds() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only into `limit`, which outlives the call.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    (ok && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// `btime` of `/proc/stat`: boot time in seconds since the epoch.
fn boot_time(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// `/proc/self/stat`: the fields after the command name (which may hold
/// spaces and parentheses, so it is skipped up to the last `)`).
fn parse_stat(stat: &str, ticks_per_second: f64, page_size: u64, boot: Option<u64>) -> Reading {
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return Reading::default();
    };
    // `rest` starts at field 3 (state); field n is at index n - 3.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    let ticks = (ticks_per_second > 0.0).then_some(ticks_per_second);
    Reading {
        cpu_seconds: match (field(14), field(15), ticks) {
            (Some(user), Some(system), Some(t)) => Some((user + system) as f64 / t),
            _ => None,
        },
        threads: field(20),
        start_time_seconds: match (field(22), boot, ticks) {
            (Some(start), Some(boot), Some(t)) => Some(boot as f64 + start as f64 / t),
            _ => None,
        },
        virtual_bytes: field(23),
        resident_bytes: field(24).map(|pages| pages * page_size),
        ..Reading::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_past_a_command_name_with_spaces() {
        let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                    250 50 0 0 20 0 7 0 1000 123456789 2048 18446744073709551615";
        let r = parse_stat(stat, 100.0, 4096, Some(1_700_000_000));
        assert_eq!(r.cpu_seconds, Some(3.0));
        assert_eq!(r.threads, Some(7));
        assert_eq!(r.start_time_seconds, Some(1_700_000_010.0));
        assert_eq!(r.virtual_bytes, Some(123_456_789));
        assert_eq!(r.resident_bytes, Some(2048 * 4096));
        assert_eq!(parse_stat("garbage", 100.0, 4096, None), Reading::default());
        assert_eq!(
            boot_time("cpu 1 2 3\nbtime 1700000000\nprocesses 5\n"),
            Some(1_700_000_000)
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_can_be_read() {
        let r = read();
        assert!(r.resident_bytes.is_some_and(|b| b > 0), "{r:?}");
        assert!(r.threads.is_some_and(|t| t >= 1), "{r:?}");
        assert!(r.open_fds.is_some_and(|n| n >= 3), "{r:?}");
        let now = crate::now_ms() as f64 / 1000.0;
        assert!(
            r.start_time_seconds
                .is_some_and(|s| s <= now + 1.0 && s > now - 86_400.0),
            "{r:?}"
        );
    }
}
