//! `ballast-bench`: measures a Ballast registry server running in-process against its
//! performance targets. Flags are parsed here; the work happens in the library.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    // The server runs in-process: the same allocator settings as `ballast server`.
    ballast_server::alloc::limit_malloc_arenas();
    ballast_bench::run(ballast_bench::Cli::parse())
}
