//! The workspace's one `unsafe`: what runtimed runs in a child between `fork` and
//! `exec` (`std::os::unix::process::CommandExt::pre_exec`), kept in a crate of its own so
//! that every other crate can forbid `unsafe_code`.
//!
//! [`confine_before_exec`] is safe to call because the code it installs is fixed and
//! audited here, not given by the caller: a `pre_exec` closure runs in the child of a
//! `fork` of a possibly multi-threaded process, where only async-signal-safe work is
//! allowed (another thread may have held the allocator's or any other lock at the
//! fork, and that lock stays held forever in the child). A safe function taking an
//! arbitrary closure could not promise that, so none is offered.
//!
//! The child, before `exec`:
//! 1. `setsid`: a session and process group of its own;
//! 2. `PR_SET_NO_NEW_PRIVS`: no `exec` grants privileges (set-id bits, file
//!    capabilities);
//! 3. `PR_CAPBSET_DROP` for every capability the kernel knows (needs `CAP_SETPCAP`:
//!    without it, as for a non-root process, the bounding set stays, which grants
//!    nothing with no-new-privs set and the permitted set empty);
//! 4. `PR_CAP_AMBIENT_CLEAR_ALL`;
//! 5. `capset` with empty effective, permitted and inheritable sets.
//!
//! All of them survive `exec`, and `fork` in the program's own children.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit capability sets, two 32-bit words.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Highest capability number tried; the loop stops at the first the kernel does not know.
const MAX_CAPABILITY: libc::c_ulong = 63;

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct`.
#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const ZERO: libc::c_ulong = 0;

/// Makes `command`'s child confine itself before exec (see the crate's documentation):
/// own session, no new privileges, every capability dropped from every set. A step
/// that fails makes the spawn fail with that error (`Command::spawn` returns it); a
/// bounding set that cannot be emptied for lack of `CAP_SETPCAP` is not a failure.
pub fn confine_before_exec(command: &mut Command) {
    // SAFETY: the closure runs in the child between fork and exec. It only makes
    // async-signal-safe syscalls (setsid, prctl, capset) on integers and stack data,
    // and builds an `io::Error` from errno (`last_os_error`: no allocation): no
    // allocation, no locks, no state another thread of the parent could have held at
    // fork time. It captures nothing, so nothing of the parent's is touched.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::prctl(
                libc::PR_SET_NO_NEW_PRIVS,
                1 as libc::c_ulong,
                ZERO,
                ZERO,
                ZERO,
            ) < 0
            {
                return Err(io::Error::last_os_error());
            }
            // Bounding set first: dropping from it needs CAP_SETPCAP, lost by capset.
            let mut cap: libc::c_ulong = 0;
            while cap <= MAX_CAPABILITY {
                if libc::prctl(libc::PR_CAPBSET_DROP, cap, ZERO, ZERO, ZERO) < 0 {
                    let err = io::Error::last_os_error();
                    match err.raw_os_error() {
                        // Past the last capability this kernel knows.
                        Some(libc::EINVAL) => break,
                        // No CAP_SETPCAP (a non-root agent, or root without it): the
                        // bounding set stays, and nothing can be gained through it:
                        // with no_new_privs set above, exec never grants more than
                        // the permitted set, emptied by capset below.
                        Some(libc::EPERM) => break,
                        _ => return Err(err),
                    }
                }
                cap += 1;
            }
            if libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                ZERO,
                ZERO,
                ZERO,
            ) < 0
            {
                return Err(io::Error::last_os_error());
            }
            let mut header = CapHeader {
                version: CAPABILITY_VERSION_3,
                pid: 0,
            };
            let data = [CapData {
                effective: 0,
                permitted: 0,
                inheritable: 0,
            }; 2];
            if libc::syscall(
                libc::SYS_capset,
                &mut header as *mut CapHeader,
                data.as_ptr(),
            ) < 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// The value of `field` in a `/proc/<pid>/status` text.
    fn status_field<'a>(status: &'a str, field: &str) -> &'a str {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .map(str::trim)
            .expect("the field is in /proc/<pid>/status")
    }

    /// `/proc/self/status` and `/proc/self/stat` of a confined `cat`: the confined
    /// process itself.
    fn confined_status_and_stat() -> String {
        let mut command = Command::new("sh");
        command.args(["-c", "exec cat /proc/self/status /proc/self/stat"]);
        confine_before_exec(&mut command);
        let output = command.output().expect("the confined child runs");
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    }

    #[test]
    fn the_child_has_its_own_session_no_new_privs_and_no_capabilities() {
        let text = confined_status_and_stat();
        assert_eq!(status_field(&text, "NoNewPrivs"), "1", "{text}");
        for set in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
            assert_eq!(
                status_field(&text, set),
                "0000000000000000",
                "{set}: {text}"
            );
        }
        // The stat line: pid (comm) state ppid pgrp session ...
        let stat = text.lines().last().unwrap();
        let pid = stat.split_whitespace().next().unwrap();
        let after_comm = &stat[stat.rfind(')').unwrap() + 1..];
        let fields: Vec<&str> = after_comm.split_whitespace().collect();
        assert_eq!(
            (fields[2], fields[3]),
            (pid, pid),
            "group and session: {stat}"
        );
    }

    /// Left out by the default nextest profile (`.config/nextest.toml`); `--profile full`
    /// runs it as root.
    mod needs_root {
        use super::*;

        #[test]
        fn the_child_has_an_empty_bounding_set() {
            // Only a process with CAP_SETPCAP (root) can empty the bounding set.
            let own = std::fs::read_to_string("/proc/self/status").unwrap();
            assert_eq!(
                status_field(&own, "Uid").split_whitespace().nth(1),
                Some("0"),
                "needs root (CAP_SETPCAP): run it as root with `cargo nextest run --profile full`"
            );
            let text = confined_status_and_stat();
            assert_eq!(status_field(&text, "CapBnd"), "0000000000000000", "{text}");
        }
    }
}
