//! CPU time from `/proc`, for benchmarks that report where a shared machine's time
//! goes: CPU per request is steadier than throughput, which other processes move.

use std::io;
use std::time::Duration;

/// `/proc`'s clock ticks per second (`USER_HZ`): 100 on every Linux architecture this
/// runs on.
const USER_HZ: u64 = 100;

/// CPU time (user + system) the process `pid` has used so far.
pub fn cpu_time(pid: u32) -> io::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let (_, after) = stat
        .rsplit_once(')')
        .ok_or_else(|| invalid("/proc/PID/stat: no command"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of proc_pid_stat(5), 12 and 13 after the
    // command.
    let total = ticks(&fields, 11)? + ticks(&fields, 12)?;
    Ok(ticks_to_duration(total))
}

/// CPU time every CPU of the machine has spent busy (all but idle and iowait) since
/// boot: with the processes one does not start, such as a pod's.
pub fn machine_busy_time() -> io::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let first = stat.lines().next().unwrap_or_default();
    let fields: Vec<&str> = first.split_whitespace().skip(1).collect();
    // user nice system idle iowait irq softirq steal.
    let all = (0..8).map(|i| ticks(&fields, i)).sum::<io::Result<u64>>()?;
    let idle = ticks(&fields, 3)? + ticks(&fields, 4)?;
    Ok(ticks_to_duration(all - idle))
}

fn ticks(fields: &[&str], i: usize) -> io::Result<u64> {
    fields
        .get(i)
        .ok_or_else(|| invalid("/proc stat: too few fields"))?
        .parse::<u64>()
        .map_err(|_| invalid("/proc stat: not a number"))
}

fn ticks_to_duration(ticks: u64) -> Duration {
    Duration::from_millis(ticks * 1000 / USER_HZ)
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_and_the_machine_count_the_cpu_time_it_spends() {
        let before = cpu_time(std::process::id()).expect("own stat");
        let machine_before = machine_busy_time().expect("/proc/stat");
        // Spins until 50 ms of CPU time are counted: a reader that does not count
        // ends at the bound instead of hanging.
        let bound = std::time::Instant::now() + Duration::from_secs(20);
        let mut own = before;
        while own < before + Duration::from_millis(50) && std::time::Instant::now() < bound {
            std::hint::black_box((0..10_000u64).sum::<u64>());
            own = cpu_time(std::process::id()).expect("own stat");
        }
        assert!(
            own >= before + Duration::from_millis(50),
            "{before:?} -> {own:?}"
        );
        let machine = machine_busy_time().expect("/proc/stat");
        // The machine's figure is sampled per tick, the process's is exact: two ticks
        // of slack.
        let spent = (own - before).saturating_sub(Duration::from_millis(20));
        assert!(
            machine - machine_before >= spent,
            "{machine_before:?} -> {machine:?}, spent {spent:?}"
        );
    }
}
