//! The `nudge` command: parses arguments and hands over to [`cli`].

mod cli;

use std::process::ExitCode;

/// polars and the per-user structs allocate from every core at once; glibc's allocator spent a
/// tenth of a windows update in `malloc_consolidate` and `_int_free`.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    cli::main()
}
