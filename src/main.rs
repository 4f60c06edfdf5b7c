//! The `roundtable` command line: parse, then dispatch. Everything a person runs lives in
//! `roundtable::app`; the two commands that open a window when there is a display (`host`,
//! `connect`) go through `roundtable::ui`, which falls back to the app's headless versions.

use clap::Parser;
use roundtable::app::{self, Cli, Command};
use roundtable::ui;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    app::init_tracing(cli.verbose);
    let data_dir = cli.data_dir.as_deref();
    let result = match cli.command {
        None => ui::run_host(app::ServeArgs::default(), data_dir),
        Some(Command::Host(args)) => ui::run_host(args, data_dir),
        Some(Command::Connect(args)) => ui::run_connect(args, data_dir),
        Some(command) => app::run(command, data_dir),
    };
    app::exit_code(result)
}
