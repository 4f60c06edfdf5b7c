//! The agents roundtable's tests and scenarios run as real processes: `examples/echo_agent.rs`
//! (the `command` protocol) and `examples/fake_claude.rs` (a scripted Claude Code CLI). They are
//! examples, not binaries, so `cargo test` builds them as executables (`target/debug/examples/`,
//! where `scenario::agents::find_bin` looks) and `cargo install` never installs them. Build them
//! alone with `cargo build --examples -p roundtable-testbins`.
