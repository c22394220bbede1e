//! Machine-wide CPU accounting from `/proc/<pid>/stat`: who used the CPU during a phase.

use std::collections::HashMap;

/// Clock ticks per second of `/proc/<pid>/stat` times (`CLK_TCK`, 100 on Linux x86-64/arm64).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU time consumed so far by every process, by pid: `(command name, ticks)`.
#[derive(Debug, Clone, Default)]
pub struct Snapshot(HashMap<u32, (String, u64)>);

/// Parse one `/proc/<pid>/stat` line into `(comm, utime + stime)`.
fn parse_stat(line: &str) -> Option<(String, u64)> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    let comm = line.get(open + 1..close)?.to_string();
    // After the comm: state is field 3; utime and stime are fields 14 and 15.
    let rest: Vec<&str> = line.get(close + 2..)?.split_whitespace().collect();
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    Some((comm, utime + stime))
}

/// Read every process's CPU time now.
pub fn snapshot() -> Snapshot {
    let mut map = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Ok(line) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                && let Some(v) = parse_stat(&line)
            {
                map.insert(pid, v);
            }
        }
    }
    Snapshot(map)
}

/// CPU seconds used between two snapshots, grouped by `classify(pid, comm)`.
pub fn usage(
    before: &Snapshot,
    after: &Snapshot,
    classify: impl Fn(u32, &str) -> String,
) -> Vec<(String, f64)> {
    let mut groups: HashMap<String, u64> = HashMap::new();
    for (pid, (comm, ticks)) in &after.0 {
        // A process that exec'd keeps its pid and its CPU time, so match by pid only.
        let prior = before.0.get(pid).map_or(0, |(_, t)| *t);
        *groups.entry(classify(*pid, comm)).or_default() += ticks.saturating_sub(prior);
    }
    let mut out: Vec<(String, f64)> = groups
        .into_iter()
        .map(|(g, t)| (g, t as f64 / TICKS_PER_SECOND))
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    out
}

/// Whole-machine CPU tick counters (`/proc/stat`, all cores).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Machine {
    /// user + nice + system + irq + softirq + steal.
    pub busy: u64,
    /// Waiting for I/O with nothing else to run.
    pub iowait: u64,
    /// Taken by the hypervisor for other guests.
    pub steal: u64,
    /// Everything.
    pub total: u64,
}

/// Read the machine's CPU counters now.
pub fn machine() -> Option<Machine> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user/nice).
    let field = |i: usize| v.get(i).copied().unwrap_or(0);
    let total: u64 = v.iter().take(8).sum();
    let (idle, iowait) = (*v.get(3)?, field(4));
    Some(Machine {
        busy: total - idle - iowait,
        iowait,
        steal: field(7),
        total,
    })
}

/// Average cores (busy, in iowait, stolen) between two [`machine`] readings.
pub fn machine_cores(before: Machine, after: Machine) -> Option<(f64, f64, f64)> {
    let total = after.total.checked_sub(before.total)? as f64;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let share = |a: u64, b: u64| a.saturating_sub(b) as f64 / total * cores;
    (total > 0.0).then(|| {
        (
            share(after.busy, before.busy),
            share(after.iowait, before.iowait),
            share(after.steal, before.steal),
        )
    })
}

/// Record the machine's busy / iowait / steal cores for a phase.
pub fn report_machine(
    report: &mut crate::report::Report,
    scenario: &str,
    phase: &str,
    before: Option<Machine>,
    after: Option<Machine>,
) {
    let Some((busy, iowait, steal)) = before.zip(after).and_then(|(b, a)| machine_cores(b, a))
    else {
        return;
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    report.figure(
        scenario,
        format!("{phase}: CPU busy, whole machine (of {cores} cores)"),
        Some(busy),
        "cores",
    );
    report.figure(
        scenario,
        format!("{phase}: CPU in I/O wait, whole machine"),
        Some(iowait),
        "cores",
    );
    report.figure(
        scenario,
        format!("{phase}: CPU stolen by the hypervisor"),
        Some(steal),
        "cores",
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_even_with_spaces_in_the_name() {
        let line = "1234 (tokio worker) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 8 0 \
                    100 1000 200 18446744073709551615";
        assert_eq!(parse_stat(line), Some(("tokio worker".into(), 325)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn usage_groups_deltas_and_counts_new_processes_from_zero() {
        let before = Snapshot(HashMap::from([
            (1, ("postgres".to_string(), 100)),
            (2, ("redis-server".to_string(), 50)),
            (4, ("bash".to_string(), 70)),
        ]));
        let after = Snapshot(HashMap::from([
            (1, ("postgres".to_string(), 300)),
            // Same pid, new name (exec): still a delta (80 - 70), not its whole life.
            (4, ("cargo".to_string(), 80)),
            (2, ("redis-server".to_string(), 60)),
            (3, ("postgres".to_string(), 40)),
        ]));
        let u = usage(&before, &after, |_, comm| comm.to_string());
        assert_eq!(
            u,
            vec![
                ("postgres".to_string(), 2.4),
                ("cargo".to_string(), 0.1),
                ("redis-server".to_string(), 0.1)
            ]
        );
        assert!(machine().is_some_and(|m| m.busy + m.iowait <= m.total && m.steal <= m.busy));
        let m = |busy, iowait, steal, total| Machine {
            busy,
            iowait,
            steal,
            total,
        };
        assert_eq!(machine_cores(m(10, 0, 0, 100), m(10, 0, 0, 100)), None);
        // 100 ticks over all cores: 50 busy (10 of them stolen), 20 iowait.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let (busy, iowait, steal) = machine_cores(m(0, 0, 0, 0), m(50, 20, 10, 100)).unwrap();
        assert!((busy - 0.5 * cores).abs() < 1e-9);
        assert!((iowait - 0.2 * cores).abs() < 1e-9);
        assert!((steal - 0.1 * cores).abs() < 1e-9);
    }
}
