//! The `roundtable` command line: parse, then dispatch. Everything a person runs lives in
//! `roundtable::app`; the two commands that open a window when there is a display (`host`,
//! `connect`) go through `roundtable::ui`, which falls back to the app's headless versions.

use clap::Parser;
use roundtable::app::{self, Cli, Command};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    app::init_tracing(cli.verbose);
    let data_dir = cli.data_dir.as_deref();
    let result = match cli.command {
        None => windowed(Command::Host(app::ServeArgs::default()), data_dir),
        Some(command @ (Command::Host(_) | Command::Connect(_))) => windowed(command, data_dir),
        Some(command) => app::run(command, data_dir),
    };
    app::exit_code(result)
}

/// `host` and `connect`: a window when there is a display.
#[cfg(feature = "gui")]
fn windowed(command: Command, data_dir: Option<&std::path::Path>) -> anyhow::Result<ExitCode> {
    use roundtable::ui;
    match command {
        Command::Connect(args) => ui::run_connect(args, data_dir),
        Command::Host(args) => ui::run_host(args, data_dir),
        other => app::run(other, data_dir),
    }
}

/// `host` and `connect` in a build without windows: headless, saying so.
#[cfg(not(feature = "gui"))]
fn windowed(command: Command, data_dir: Option<&std::path::Path>) -> anyhow::Result<ExitCode> {
    let what =
        if matches!(command, Command::Connect(_)) { "joining in terminal line mode" } else { "running headless" };
    app::serve::say(&format!(
        "this roundtable was built without windows (the `gui` feature) — {what}; rebuild with default features for the window\n"
    ));
    app::run(command, data_dir)
}
