//! WASI preview1, as Envoy (cpp-host) provides it: stdout/stderr go to the log (INFO/ERROR),
//! clocks read the virtual clock, `random_get` draws from the seeded RNG, the environment is
//! the plugin's `environment_variables`, there are no arguments and no files. Registered under
//! both `wasi_snapshot_preview1` and `wasi_unstable`.

use super::{C, Registry, mem, misc::log_line};
use crate::abi::{LogLevel, RANDOM_GET_MAX_BYTES};

type R = wasmtime::Result<i32>;

const SUCCESS: i32 = 0;
const BADF: i32 = 8;
const FAULT: i32 = 21;
const INVAL: i32 = 28;
const NOENT: i32 = 44;
const NOSYS: i32 = 52;
const NOTSUP: i32 = 58;
const NOTDIR: i32 = 20;

fn std_fd(fd: i32) -> bool {
    fd == 1 || fd == 2
}

pub(super) fn register(r: &mut Registry) {
    for m in ["wasi_snapshot_preview1", "wasi_unstable"] {
        r.func(m, "fd_write", fd_write);
        r.func(
            m,
            "fd_pwrite",
            |c: C<'_>, fd: i32, iovs: i32, n: i32, _off: i64, nw: i32| {
                if !std_fd(fd) {
                    Ok(BADF)
                } else {
                    fd_write(c, fd, iovs, n, nw)
                }
            },
        );
        r.func(
            m,
            "fd_read",
            |_: C<'_>, _: i32, _: i32, _: i32, _: i32| -> R { Ok(NOSYS) },
        );
        r.func(
            m,
            "fd_pread",
            |_: C<'_>, _: i32, _: i32, _: i32, _: i64, _: i32| -> R { Ok(NOSYS) },
        );
        r.func(
            m,
            "fd_seek",
            |_: C<'_>, _: i32, _: i64, _: i32, _: i32| -> R { Ok(SUCCESS) },
        );
        r.func(m, "fd_close", |_: C<'_>, _: i32| -> R { Ok(SUCCESS) });
        r.func(m, "fd_fdstat_get", fd_fdstat_get);
        r.func(m, "fd_fdstat_set_flags", |_: C<'_>, _: i32, _: i32| -> R {
            Ok(NOSYS)
        });
        r.func(
            m,
            "fd_fdstat_set_rights",
            |_: C<'_>, fd: i32, _: i64, _: i64| -> R {
                Ok(if std_fd(fd) { SUCCESS } else { BADF })
            },
        );
        r.func(m, "fd_prestat_get", |_: C<'_>, _: i32, _: i32| -> R {
            Ok(BADF)
        });
        r.func(
            m,
            "fd_prestat_dir_name",
            |_: C<'_>, _: i32, _: i32, _: i32| -> R { Ok(NOSYS) },
        );
        r.func(m, "fd_filestat_get", |_: C<'_>, _: i32, _: i32| -> R {
            Ok(BADF)
        });
        r.func(
            m,
            "fd_filestat_set_size",
            |_: C<'_>, fd: i32, _: i64| -> R { Ok(if std_fd(fd) { SUCCESS } else { BADF }) },
        );
        r.func(
            m,
            "fd_filestat_set_times",
            |_: C<'_>, fd: i32, _: i64, _: i64, _: i32| -> R {
                Ok(if std_fd(fd) { SUCCESS } else { BADF })
            },
        );
        r.func(
            m,
            "fd_advise",
            |_: C<'_>, _: i32, _: i64, _: i64, _: i32| -> R { Ok(SUCCESS) },
        );
        r.func(m, "fd_allocate", |_: C<'_>, fd: i32, _: i64, _: i64| -> R {
            Ok(if std_fd(fd) { SUCCESS } else { BADF })
        });
        r.func(m, "fd_datasync", |_: C<'_>, fd: i32| -> R {
            Ok(if std_fd(fd) { SUCCESS } else { BADF })
        });
        r.func(m, "fd_sync", |_: C<'_>, fd: i32| -> R {
            Ok(if std_fd(fd) { SUCCESS } else { BADF })
        });
        r.func(m, "fd_renumber", |_: C<'_>, fd: i32, to: i32| -> R {
            Ok(if std_fd(fd) && std_fd(to) {
                NOTSUP
            } else {
                BADF
            })
        });
        r.func(m, "fd_tell", |mut c: C<'_>, fd: i32, p: i32| -> R {
            if !std_fd(fd) {
                return Ok(BADF);
            }
            Ok(if mem::write_u64(&mut c, p, 0) {
                SUCCESS
            } else {
                FAULT
            })
        });
        r.func(
            m,
            "fd_readdir",
            |mut c: C<'_>, _: i32, _: i32, _: i32, _: i64, used: i32| -> R {
                Ok(if mem::write_u32(&mut c, used, 0) {
                    NOTDIR
                } else {
                    FAULT
                })
            },
        );
        r.func(
            m,
            "path_open",
            |_: C<'_>,
             _: i32,
             _: i32,
             _: i32,
             _: i32,
             _: i32,
             _: i64,
             _: i64,
             _: i32,
             _: i32|
             -> R { Ok(NOENT) },
        );
        r.func(
            m,
            "path_filestat_get",
            |_: C<'_>, _: i32, _: i32, _: i32, _: i32, _: i32| -> R { Ok(NOTSUP) },
        );
        r.func(
            m,
            "path_filestat_set_times",
            |_: C<'_>, _: i32, _: i32, _: i32, _: i32, _: i64, _: i64, _: i32| -> R { Ok(NOTSUP) },
        );
        r.func(
            m,
            "path_create_directory",
            |_: C<'_>, _: i32, _: i32, _: i32| -> R { Ok(NOTSUP) },
        );
        r.func(
            m,
            "path_remove_directory",
            |_: C<'_>, _: i32, _: i32, _: i32| -> R { Ok(NOTSUP) },
        );
        r.func(
            m,
            "path_unlink_file",
            |_: C<'_>, _: i32, _: i32, _: i32| -> R { Ok(NOTSUP) },
        );
        r.func(
            m,
            "path_link",
            |_: C<'_>, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32| -> R { Ok(NOTSUP) },
        );
        r.func(
            m,
            "path_rename",
            |_: C<'_>, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32| -> R { Ok(NOTSUP) },
        );
        r.func(
            m,
            "path_symlink",
            |_: C<'_>, _: i32, _: i32, _: i32, _: i32, _: i32| -> R { Ok(NOTSUP) },
        );
        r.func(
            m,
            "path_readlink",
            |mut c: C<'_>, _: i32, _: i32, _: i32, _: i32, _: i32, used: i32| -> R {
                Ok(if mem::write_u32(&mut c, used, 0) {
                    NOTSUP
                } else {
                    FAULT
                })
            },
        );
        r.func(m, "environ_sizes_get", environ_sizes_get);
        r.func(m, "environ_get", environ_get);
        r.func(
            m,
            "args_sizes_get",
            |mut c: C<'_>, argc: i32, size: i32| -> R {
                Ok(
                    if mem::write_u32(&mut c, argc, 0) && mem::write_u32(&mut c, size, 0) {
                        SUCCESS
                    } else {
                        FAULT
                    },
                )
            },
        );
        r.func(m, "args_get", |_: C<'_>, _: i32, _: i32| -> R {
            Ok(SUCCESS)
        });
        r.func(m, "clock_time_get", clock_time_get);
        r.func(m, "clock_res_get", |mut c: C<'_>, id: i32, p: i32| -> R {
            if id != 0 && id != 1 {
                return Ok(NOTSUP);
            }
            Ok(if mem::write_u64(&mut c, p, 1) {
                SUCCESS
            } else {
                FAULT
            })
        });
        r.func(m, "random_get", random_get);
        r.func(m, "sched_yield", |_: C<'_>| -> R { Ok(SUCCESS) });
        r.func(
            m,
            "poll_oneoff",
            |mut c: C<'_>, _: i32, _: i32, _: i32, nevents: i32| -> R {
                Ok(if mem::write_u32(&mut c, nevents, 0) {
                    SUCCESS
                } else {
                    FAULT
                })
            },
        );
        r.func(m, "proc_exit", proc_exit);
        r.func(
            m,
            "sock_accept",
            |mut c: C<'_>, _: i32, _: i32, p: i32| -> R {
                Ok(if mem::write_u32(&mut c, p, 0) {
                    NOTSUP
                } else {
                    FAULT
                })
            },
        );
        r.func(
            m,
            "sock_recv",
            |mut c: C<'_>, _: i32, _: i32, _: i32, _: i32, len: i32, flags: i32| -> R {
                Ok(
                    if mem::write_u32(&mut c, len, 0) && mem::write(&mut c, flags, &[0, 0]) {
                        NOTSUP
                    } else {
                        FAULT
                    },
                )
            },
        );
        r.func(
            m,
            "sock_send",
            |mut c: C<'_>, _: i32, _: i32, _: i32, _: i32, len: i32| -> R {
                Ok(if mem::write_u32(&mut c, len, 0) {
                    NOTSUP
                } else {
                    FAULT
                })
            },
        );
        r.func(m, "sock_shutdown", |_: C<'_>, _: i32, _: i32| -> R {
            Ok(NOTSUP)
        });
    }
}

fn fd_write(mut c: C<'_>, fd: i32, iovs: i32, iovs_len: i32, nwritten: i32) -> R {
    let level = match fd {
        1 => LogLevel::Info,
        2 => LogLevel::Error,
        _ => return Ok(BADF),
    };
    let mut out = Vec::new();
    for i in 0..(iovs_len as u32) {
        let Some(at) = (iovs as u32).checked_add(i.saturating_mul(8)) else {
            return Ok(FAULT);
        };
        let Some(iov) = mem::read(&c, at as i32, 8) else {
            return Ok(FAULT);
        };
        let buf = u32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
        let len = u32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
        if len != 0 {
            let Some(data) = mem::read(&c, buf as i32, len as i32) else {
                return Ok(FAULT);
            };
            out.extend_from_slice(&data);
        }
    }
    let written = out.len();
    if written != 0 {
        if out.last() == Some(&b'\n') {
            out.pop();
        }
        log_line(&mut c, level, String::from_utf8_lossy(&out).into_owned());
    }
    Ok(if mem::write_u32(&mut c, nwritten, written as u32) {
        SUCCESS
    } else {
        FAULT
    })
}

fn fd_fdstat_get(mut c: C<'_>, fd: i32, stat: i32) -> R {
    if !std_fd(fd) {
        return Ok(BADF);
    }
    let mut buf = [0u8; 24];
    buf[8..16].copy_from_slice(&64u64.to_le_bytes()); // fs_rights_base = FD_WRITE
    Ok(if mem::write(&mut c, stat, &buf) {
        SUCCESS
    } else {
        FAULT
    })
}

fn env_entries(c: &C<'_>) -> Vec<Vec<u8>> {
    c.data()
        .cfg
        .env
        .iter()
        .map(|(k, v)| format!("{k}={v}\0").into_bytes())
        .collect()
}

fn environ_sizes_get(mut c: C<'_>, count: i32, size: i32) -> R {
    let e = env_entries(&c);
    let total: usize = e.iter().map(Vec::len).sum();
    Ok(
        if mem::write_u32(&mut c, count, e.len() as u32)
            && mem::write_u32(&mut c, size, total as u32)
        {
            SUCCESS
        } else {
            FAULT
        },
    )
}

fn environ_get(mut c: C<'_>, environ: i32, buf: i32) -> R {
    let mut at = buf as u32;
    let mut slot = environ as u32;
    for entry in env_entries(&c) {
        if !mem::write_u32(&mut c, slot as i32, at) || !mem::write(&mut c, at as i32, &entry) {
            return Ok(FAULT);
        }
        at = at.wrapping_add(entry.len() as u32);
        slot = slot.wrapping_add(4);
    }
    Ok(SUCCESS)
}

fn clock_time_get(mut c: C<'_>, id: i32, _precision: i64, out: i32) -> R {
    let t = {
        let w = c.data().world();
        match id {
            0 => w.clock.wall_ns(),
            1 => w.clock.monotonic_ns(),
            _ => return Ok(NOTSUP),
        }
    };
    Ok(if mem::write_u64(&mut c, out, t) {
        SUCCESS
    } else {
        FAULT
    })
}

fn random_get(mut c: C<'_>, buf: i32, len: i32) -> R {
    let len = len as u32;
    if len > RANDOM_GET_MAX_BYTES {
        return Ok(INVAL);
    }
    if len == 0 {
        return Ok(SUCCESS);
    }
    let mut bytes = vec![0u8; len as usize];
    c.data().world().rng.fill(&mut bytes);
    Ok(if mem::write(&mut c, buf, &bytes) {
        SUCCESS
    } else {
        FAULT
    })
}

fn proc_exit(mut c: C<'_>, code: i32) {
    // Envoy only logs this; the guest then usually traps on its own `unreachable`.
    log_line(&mut c, LogLevel::Error, format!("wasi proc_exit({code})"));
}
