//! The `asyb` command: parse the flags, run one subcommand with the library, report.
//! Holds no algorithm. Errors are printed once, on one line, and set the exit code:
//! 0 success, 1 bad input (a file, a flag, a config value), 2 internal or system error.
//! A closed standard output (`asyb predict | head`) counts as success. A run stopped by
//! Ctrl-C writes its outputs and exits with 130.

mod args;
mod bench;
mod commands;
mod plot;
mod report;
mod sim;

use std::process::ExitCode;

use clap::FromArgMatches;

use crate::args::{BenchCommand, Cli, Command};

#[global_allocator]
static ALLOC: asyb::alloc::HugeAlloc = asyb::alloc::HugeAlloc;

/// Large buffers (dense gradients, margins, model copies) are allocated and freed
/// around every evaluation and snapshot. glibc raises its mmap threshold each time such
/// a buffer is freed, after which the next ones come from the heap and are kept by the
/// process: tens of MB of peak memory on a click-through-scale run. A fixed threshold
/// keeps them memory-mapped, returned to the system when freed; a high trim threshold
/// keeps the heap from shrinking and growing around the small ones. One arena for all
/// threads: the threads that allocate (readers, workers growing their buffers, the
/// evaluation's) do so a few times per run, and each extra arena kept 0.5-1.7 MB of
/// small blocks resident (4 MB of the reference workload's peak).
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called once before any thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = match args::command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(c) => c,
        Err(e) => return clap_error(e),
    };
    let result = match cli.command {
        Command::Demo(a) => commands::demo(&a),
        Command::Gen(g) => commands::gen(&g),
        Command::Train(a) => commands::train(&a),
        Command::Predict(a) => commands::predict(&a),
        Command::Eval(a) => commands::eval(&a),
        Command::Convert(a) => commands::convert(&a),
        Command::Inspect(a) => commands::inspect(&a),
        Command::Bench(BenchCommand::Perf(a)) => bench::perf(&a),
        Command::Bench(BenchCommand::Speedup(a)) => bench::speedup(&a),
        Command::Bench(BenchCommand::Rate(a)) => bench::rate(&a),
        Command::Sim(a) => sim::sim(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report_error(&e),
    }
}

/// Help and version go to standard output with success; a usage error is one line.
fn clap_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::from(1)
        }
        _ => {
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("error: {first} (see 'asyb --help')");
            ExitCode::from(1)
        }
    }
}

/// A run stopped by Ctrl-C: its outputs are written, the exit status says it did not
/// finish.
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

/// An error another process reports (another MPI rank found the same fault): exit
/// with status 1 without printing it again.
#[derive(Debug)]
pub struct Silent;

impl std::fmt::Display for Silent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("reported by rank 0")
    }
}

impl std::error::Error for Silent {}

fn report_error(e: &anyhow::Error) -> ExitCode {
    if e.downcast_ref::<Silent>().is_some() {
        // mpirun ends every rank once one exits with an error: leave rank 0 the time to
        // print the error (its exit ends this rank sooner).
        std::thread::sleep(std::time::Duration::from_secs(3));
        return ExitCode::from(1);
    }
    if e.downcast_ref::<Interrupted>().is_some() {
        eprintln!("interrupted: the outputs hold the model as it was when training stopped");
        return ExitCode::from(130);
    }
    let broken_pipe = e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || matches!(c.downcast_ref::<asyb::Error>(),
                Some(asyb::Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe)
    });
    if broken_pipe {
        return ExitCode::SUCCESS;
    }
    // The chain, each cause once: library errors already quote their source.
    let mut line = String::new();
    for cause in e.chain() {
        let msg = cause.to_string();
        if !line.contains(&msg) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&msg);
        }
    }
    let line = line.replace('\n', " ");
    eprintln!("error: {line}");
    let internal = match e.chain().find_map(|c| c.downcast_ref::<asyb::Error>()) {
        Some(asyb::Error::Runtime { .. }) => true,
        // As in process: a file that cannot be read or parsed on another rank is input.
        Some(asyb::Error::Remote { .. }) => false,
        Some(_) => false,
        None => true,
    };
    ExitCode::from(if internal { 2 } else { 1 })
}
