//! /proc readings (CPU seconds, RSS), the machine description, and CPU
//! pinning through `taskset` (sched_setaffinity without unsafe code).

use anyhow::{bail, Context};
use serde::Serialize;
use std::process::Command;
use std::sync::OnceLock;

/// Clock ticks per second of /proc CPU times (`getconf CLK_TCK`, usually 100).
pub fn clk_tck() -> f64 {
    static TCK: OnceLock<f64> = OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|v| *v > 0.0)
            .unwrap_or(100.0)
    })
}

/// utime + stime of a /proc/…/stat line, in seconds.
pub fn parse_stat_cpu(stat: &str) -> Option<f64> {
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clk_tck())
}

/// CPU seconds (user + system, all threads) of process `pid`.
pub fn process_cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let s =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("/proc/{pid}/stat"))?;
    parse_stat_cpu(&s).context("cannot parse /proc/PID/stat")
}

/// CPU seconds of the calling thread.
pub fn thread_cpu_seconds() -> Option<f64> {
    std::fs::read_to_string("/proc/thread-self/stat")
        .ok()
        .and_then(|s| parse_stat_cpu(&s))
}

/// `VmRSS` of a /proc/…/status text, in bytes.
pub fn parse_status_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Resident set size of process `pid`, in bytes.
pub fn process_rss(pid: u32) -> anyhow::Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("/proc/{pid}/status"))?;
    parse_status_rss(&s).context("no VmRSS in /proc/PID/status")
}

/// Pins every thread of `pid` to `cpu` (`taskset -a -p -c`). Threads the
/// process starts later inherit the affinity of the thread that starts them.
pub fn pin(pid: u32, cpu: usize) -> anyhow::Result<()> {
    let out = Command::new("taskset")
        .args(["-a", "-p", "-c", &cpu.to_string(), &pid.to_string()])
        .output()
        .context("cannot run taskset (util-linux)")?;
    if !out.status.success() {
        bail!(
            "taskset -a -p -c {cpu} {pid}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Pins only the calling thread (`/proc/thread-self` names its tid).
pub fn pin_current_thread(cpu: usize) -> anyhow::Result<()> {
    let tid = current_tid()?;
    let out = Command::new("taskset")
        .args(["-p", "-c", &cpu.to_string(), &tid.to_string()])
        .output()
        .context("cannot run taskset (util-linux)")?;
    if !out.status.success() {
        bail!(
            "taskset -p -c {cpu} {tid}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Gives every thread of `pid` (or only the thread `pid` with
/// `all_threads == false`) SCHED_FIFO priority `prio` (`chrt`), so that
/// other work on a shared machine (compiles) does not preempt the measured
/// processes. Threads that sleep in epoll cannot starve the machine, and the
/// kernel's RT throttling keeps 5% for everybody else.
pub fn realtime(pid: u32, all_threads: bool, prio: u8) -> anyhow::Result<()> {
    let mut cmd = Command::new("chrt");
    if all_threads {
        cmd.arg("-a");
    }
    let out = cmd
        .args(["-f", "-p", &prio.to_string(), &pid.to_string()])
        .output()
        .context("cannot run chrt (util-linux)")?;
    if !out.status.success() {
        bail!(
            "chrt -f -p {prio} {pid}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The calling thread's id (from /proc/thread-self).
pub fn current_tid() -> anyhow::Result<u32> {
    let link = std::fs::read_link("/proc/thread-self").context("/proc/thread-self")?;
    link.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse::<u32>().ok())
        .context("cannot read this thread's id")
}

/// A CPU/RSS sampler of one process over a measurement window.
#[derive(Clone, Copy, Debug)]
pub struct Usage {
    pub pid: u32,
    cpu0: f64,
    rss0: u64,
}

impl Usage {
    pub fn start(pid: u32) -> anyhow::Result<Self> {
        Ok(Self {
            pid,
            cpu0: process_cpu_seconds(pid)?,
            rss0: process_rss(pid)?,
        })
    }
    /// CPU seconds since `start`, RSS at start and now.
    pub fn finish(&self) -> anyhow::Result<(f64, u64, u64)> {
        Ok((
            process_cpu_seconds(self.pid)? - self.cpu0,
            self.rss0,
            process_rss(self.pid)?,
        ))
    }
}

/// What machine a result was measured on.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cpus: usize,
    pub kernel: String,
    /// 1-minute load average when the run started (others' work on the machine).
    pub loadavg_1m: f64,
}

pub fn machine() -> Machine {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.to_owned())
        })
        .and_then(|l| l.split_once(':').map(|(_, v)| v.trim().to_owned()))
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    Machine {
        cpu_model,
        cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        kernel,
        loadavg_1m: loadavg(),
    }
}

pub fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_is_parsed_past_a_command_name_with_spaces_and_parens() {
        let line =
            "1234 (my (odd) cmd) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0 100 1000 200";
        let secs = parse_stat_cpu(line).unwrap();
        assert!((secs - 300.0 / clk_tck()).abs() < 1e-9);
    }

    #[test]
    fn rss_is_read_from_status() {
        let s = "Name:\tduet\nVmPeak:\t  9999 kB\nVmRSS:\t   2048 kB\nThreads:\t3\n";
        assert_eq!(parse_status_rss(s), Some(2048 * 1024));
        assert_eq!(parse_status_rss("Name:\tx\n"), None);
    }

    #[test]
    fn own_process_readings_work() {
        let pid = std::process::id();
        assert!(process_cpu_seconds(pid).unwrap() >= 0.0);
        assert!(process_rss(pid).unwrap() > 0);
        assert!(thread_cpu_seconds().is_some());
    }
}
