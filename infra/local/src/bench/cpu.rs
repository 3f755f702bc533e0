//! Where a benchmark's CPU went, by process: this one (the handler and its client
//! libraries), the writer proxy (PgBouncer) and the primary (the postmaster and every
//! backend it forked). Read from `/proc`, so it needs no profiler and costs nothing while
//! the benchmark runs; clock ticks are 10 ms, so a variant should run for a second or more.

use std::time::Duration;

/// CPU seconds consumed, per process group, between two samples.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuSplit {
    pub client: Duration,
    pub proxy: Duration,
    pub primary: Duration,
}

/// A reading of the three counters.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    client: u64,
    proxy: u64,
    primary: u64,
}

fn ticks_per_second() -> u64 {
    // SAFETY: sysconf with a valid name has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// (parent pid, own utime+stime, reaped children's cutime+cstime) from `/proc/<pid>/stat`.
fn stat_of(pid: u32) -> Option<(u32, u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: split after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    // Fields after the name start at "state" (field 3 of proc(5)): ppid is 4, utime 14.
    let ppid = num(1)? as u32;
    Some((ppid, num(11)? + num(12)?, num(13)? + num(14)?))
}

/// A process and its live children, plus the children it has already reaped.
fn tree_ticks(root: Option<u32>) -> u64 {
    let Some(root) = root else { return 0 };
    let Some((_, own, reaped)) = stat_of(root) else {
        return 0;
    };
    let children: u64 = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(stat_of)
        .filter(|(ppid, _, _)| *ppid == root)
        .map(|(_, own, reaped)| own + reaped)
        .sum();
    own + reaped + children
}

impl CpuSample {
    pub fn take(proxy_pid: Option<u32>, primary_pid: Option<u32>) -> Self {
        CpuSample {
            client: stat_of(std::process::id()).map_or(0, |(_, own, _)| own),
            proxy: tree_ticks(proxy_pid),
            primary: tree_ticks(primary_pid),
        }
    }

    /// What each group used since `earlier`.
    pub fn since(&self, earlier: &CpuSample) -> CpuSplit {
        let hz = ticks_per_second();
        let d = |now: u64, then: u64| {
            Duration::from_secs_f64(now.saturating_sub(then) as f64 / hz as f64)
        };
        CpuSplit {
            client: d(self.client, earlier.client),
            proxy: d(self.proxy, earlier.proxy),
            primary: d(self.primary, earlier.primary),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_loop_shows_up_as_this_process_cpu() {
        // Burn 300 ms of this thread's CPU (however long that takes on a busy machine).
        let before = CpuSample::take(None, None);
        let (started, cpu0) = (
            std::time::Instant::now(),
            super::super::ingest::thread_cpu_micros(),
        );
        let mut x = 0u64;
        while super::super::ingest::thread_cpu_micros() - cpu0 < 300_000
            && started.elapsed() < Duration::from_secs(30)
        {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let split = CpuSample::take(None, None).since(&before);
        assert!(split.client >= Duration::from_millis(250), "{split:?}");
        assert_eq!(split.proxy, Duration::ZERO);
    }

    #[test]
    fn a_process_tree_counts_the_children_it_reaped() {
        // A shell whose forked subshell burns CPU and exits; the shell then idles. The
        // subshell's CPU must still be counted, as a reaped child of the root.
        let mut root = std::process::Command::new("sh")
            .args([
                "-c",
                "( i=0; while [ $i -lt 1000000 ]; do i=$((i+1)); done ); sleep 30",
            ])
            .spawn()
            .expect("sh");
        let pid = Some(root.id());
        let before = CpuSample::take(pid, None);
        let started = std::time::Instant::now();
        let mut used = Duration::ZERO;
        while started.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(100));
            used = CpuSample::take(pid, None).since(&before).proxy;
            if used >= Duration::from_millis(200) {
                break;
            }
        }
        let _ = root.kill();
        let _ = root.wait();
        assert!(used >= Duration::from_millis(200), "{used:?}");
        assert_eq!(
            CpuSample::take(None, None).since(&before).primary,
            Duration::ZERO
        );
    }
}
