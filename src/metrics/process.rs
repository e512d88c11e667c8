//! The process's own figures, named as Prometheus's client libraries name them, read from
//! `/proc` (Linux; elsewhere they are left out).

use super::text::Exposition;

pub fn render(out: &mut Exposition) {
    #[cfg(target_os = "linux")]
    if let Some(figures) = read() {
        out.counter(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            figures.cpu_seconds,
        );
        out.gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            figures.resident_bytes,
        );
        out.gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            figures.virtual_bytes,
        );
        if let Some(started) = figures.start_time_seconds {
            out.gauge(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                started,
            );
        }
        out.gauge(
            "process_open_fds",
            "Number of open file descriptors.",
            figures.open_fds,
        );
        out.gauge(
            "process_max_fds",
            "Maximum number of open file descriptors.",
            figures.max_fds,
        );
    }
    #[cfg(not(target_os = "linux"))]
    let _ = out;
}

#[cfg(target_os = "linux")]
struct Figures {
    cpu_seconds: f64,
    resident_bytes: f64,
    virtual_bytes: f64,
    start_time_seconds: Option<f64>,
    open_fds: f64,
    max_fds: f64,
}

#[cfg(target_os = "linux")]
fn read() -> Option<Figures> {
    // SAFETY: sysconf and getrlimit only read system settings into plain values.
    let (ticks, page, max_fds) = unsafe {
        let mut limit = std::mem::zeroed::<libc::rlimit>();
        let max_fds = match libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) {
            0 => limit.rlim_cur as f64,
            _ => f64::NAN,
        };
        (
            libc::sysconf(libc::_SC_CLK_TCK) as f64,
            libc::sysconf(libc::_SC_PAGESIZE) as f64,
            max_fds,
        )
    };
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces; the fields after its ')' are plain.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // Numbered from field 3 (state) as index 0: utime 14, stime 15, starttime 22, vsize
    // 23, rss 24.
    let field = |n: usize| fields.get(n - 3)?.parse::<f64>().ok();
    // The boot time, for the start time, is in /proc/stat, which a sandbox may hide
    // (systemd's ProcSubset=pid): then the start time alone is left out.
    let boot_seconds = std::fs::read_to_string("/proc/stat").ok().and_then(|stat| {
        let line = stat.lines().find_map(|l| l.strip_prefix("btime "))?;
        line.trim().parse::<f64>().ok()
    });
    let started = field(22)? / ticks;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as f64;
    Some(Figures {
        cpu_seconds: (field(14)? + field(15)?) / ticks,
        resident_bytes: field(24)? * page,
        virtual_bytes: field(23)?,
        start_time_seconds: boot_seconds.map(|boot| boot + started),
        open_fds,
        max_fds,
    })
}
