//! What runs in the child between fork and exec: a new session (and so a new process
//! group), no new privileges, and every capability dropped from every set. Only raw,
//! async-signal-safe syscalls: no allocation, no locks.

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

/// Makes `command` confine its child before exec.
pub(crate) fn confine_command(command: &mut Command) {
    // SAFETY: the closure runs in the child between fork and exec. It only makes
    // async-signal-safe syscalls (setsid, prctl, capset) on integers and stack data,
    // and builds an `io::Error` from errno (no allocation): no allocation, no locks,
    // no state another thread of the parent could have held at fork time.
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
