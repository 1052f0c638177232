//! `ballast-bench`: measures a Ballast registry server running in-process against its
//! performance targets. Flags are parsed here; the work happens in the library.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    ballast_bench::run(ballast_bench::Cli::parse())
}
