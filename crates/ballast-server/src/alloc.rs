//! Memory allocator settings of the processes that run the server.
//!
//! glibc's malloc gives threads that allocate at the same time their own arenas (up to eight per
//! core) and keeps freed memory in them, so under load a server's resident memory grows well
//! beyond what it uses: in the registry benchmark, 134 MB after the version-create phase with the
//! default arenas, 72 MB with two, at the same throughput. Two arenas are applied by re-executing
//! the program once with `MALLOC_ARENA_MAX=2` before it starts any thread (the process keeps its
//! PID). An environment that already chooses (`MALLOC_ARENA_MAX` or `GLIBC_TUNABLES`) is left as
//! it is.

/// Re-executes the current program with at most two malloc arenas, unless the environment
/// already sets them; returns only when nothing needed doing or the re-execution failed (the
/// program then runs on with the defaults). Call it first in `main`, before any thread starts.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt as _;
        const VAR: &str = "MALLOC_ARENA_MAX";
        if std::env::var_os(VAR).is_some() || std::env::var_os("GLIBC_TUNABLES").is_some() {
            return;
        }
        let Ok(exe) = std::env::current_exe() else {
            return;
        };
        let mut args = std::env::args_os();
        let mut command = std::process::Command::new(exe);
        if let Some(arg0) = args.next() {
            command.arg0(arg0);
        }
        // `exec` returns only when it failed.
        let _failed = command.args(args).env(VAR, "2").exec();
    }
}
