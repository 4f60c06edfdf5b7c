//! Resolving an agent command when a workspace is registered.
//!
//! `--agent-cmd` is typed in one directory and run, turns later, in the workspace directory. So
//! the command is resolved once, at registration, where it was typed:
//! - the command line is split like a shell would (quotes and `\` escapes), unless the whole
//!   string names an existing file (a path with spaces) or `--agent-arg`s are given (then it is
//!   the program alone);
//! - a program containing `/` is made absolute against the directory it was typed in; a bare
//!   name is looked up on `PATH` then and there;
//! - the program must be an existing, executable file, or registration fails with an
//!   [`AgentCmdError`] naming the path;
//! - each later word that names an existing file relative to the typed directory (the script in
//!   `python3 -u my_agent.py`) is made absolute too; other words are kept as typed (so a script
//!   that exists only in the workspace directory is still found there when the agent starts).
//!
//! The result is stored as `command` = the absolute program and `args` = the rest, so the turn
//! runs exactly what `workspace list` shows.

use super::command::split_words;
use crate::persist::AgentSpec;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// Why an agent command cannot be registered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AgentCmdError {
    #[error("the agent command is empty")]
    Empty,
    #[error("agent command not found at '{}'", .0.display())]
    NotFound(PathBuf),
    #[error("agent command '{0}' not found on PATH")]
    NotOnPath(String),
    #[error("agent command '{}' is not a file", .0.display())]
    NotAFile(PathBuf),
    #[error("agent command '{}' is not executable (chmod +x it, or name its interpreter first)", .0.display())]
    NotExecutable(PathBuf),
}

/// `spec` with its command resolved as the module docs describe; `typed_in` is the directory the
/// command was typed in and `path` the `PATH` to search bare names in. Specs without a command
/// (`demo`, `claude` on the host's `--claude-bin`) are returned unchanged.
pub fn resolve_spec(spec: &AgentSpec, typed_in: &Path, path: Option<&OsStr>) -> Result<AgentSpec, AgentCmdError> {
    let Some(command) = spec.command.as_deref() else { return Ok(spec.clone()) };
    let command = command.trim();
    if command.is_empty() {
        return Err(AgentCmdError::Empty);
    }
    // The whole string naming a file here (a path with spaces: `my agent.sh`) is that file,
    // with or without a `/`.
    let whole_is_file = spec.args.is_empty() && typed_in.join(command).is_file();
    if whole_is_file {
        let program = check_executable(absolute(&typed_in.join(command)))?;
        return Ok(AgentSpec { command: Some(program.display().to_string()), args: Vec::new(), ..spec.clone() });
    }
    let mut words = if spec.args.is_empty() { split_words(command) } else { vec![command.to_string()] };
    if words.is_empty() {
        return Err(AgentCmdError::Empty);
    }
    let program = resolve_program(&words.remove(0), typed_in, path)?;
    let mut args: Vec<String> = words
        .into_iter()
        .map(|w| {
            let candidate = typed_in.join(&w);
            if !w.starts_with('-') && !Path::new(&w).is_absolute() && candidate.is_file() {
                absolute(&candidate).display().to_string()
            } else {
                w
            }
        })
        .collect();
    args.extend(spec.args.iter().cloned());
    Ok(AgentSpec { command: Some(program.display().to_string()), args, ..spec.clone() })
}

/// The absolute, executable file `program` names.
fn resolve_program(program: &str, typed_in: &Path, path: Option<&OsStr>) -> Result<PathBuf, AgentCmdError> {
    if program.contains('/') {
        let full = absolute(&typed_in.join(program));
        return check_executable(full);
    }
    let found = path
        .map(std::env::split_paths)
        .into_iter()
        .flatten()
        .map(|dir| absolute(&typed_in.join(dir).join(program)))
        .find(|candidate| check_executable(candidate.clone()).is_ok());
    found.ok_or_else(|| AgentCmdError::NotOnPath(program.to_string()))
}

fn check_executable(path: PathBuf) -> Result<PathBuf, AgentCmdError> {
    let meta = match std::fs::metadata(&path) {
        Ok(meta) => meta,
        Err(_) => return Err(AgentCmdError::NotFound(path)),
    };
    if !meta.is_file() {
        return Err(AgentCmdError::NotAFile(path));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o111 == 0 {
            return Err(AgentCmdError::NotExecutable(path));
        }
    }
    Ok(path)
}

/// `path` made absolute without resolving symlinks (a virtualenv's `python` must keep its path).
/// `path` made absolute and free of `.` and `..`: its directory resolved by the file system (so
/// `..` after a symbolic link means what it means to the OS), its file name kept as typed (a
/// link to an interpreter stays the link).
fn absolute(path: &Path) -> PathBuf {
    let full = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    match (full.parent().map(std::fs::canonicalize), full.file_name()) {
        (Some(Ok(dir)), Some(name)) => dir.join(name),
        _ => full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command_spec(cmd: &str, args: &[&str]) -> AgentSpec {
        AgentSpec {
            kind: "command".into(),
            command: Some(cmd.into()),
            args: args.iter().map(|a| a.to_string()).collect(),
            plan_first: None,
        }
    }

    fn script(dir: &Path, name: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, "#!/bin/sh\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        path
    }

    #[test]
    fn a_relative_path_is_resolved_where_it_was_typed() {
        let dir = tempfile::tempdir().unwrap();
        let agent = script(dir.path(), "agent.py", 0o755);
        let spec = resolve_spec(&command_spec("./agent.py", &[]), dir.path(), None).unwrap();
        assert_eq!(spec.command.as_deref(), Some(agent.to_str().unwrap()));
        assert!(spec.args.is_empty());
    }

    #[test]
    fn an_interpreter_on_path_and_its_script_are_both_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let bin = tempfile::tempdir().unwrap();
        let python = script(bin.path(), "python3", 0o755);
        let agent = script(dir.path(), "my_agent.py", 0o644);
        let path = std::env::join_paths([bin.path()]).unwrap();
        let spec = resolve_spec(&command_spec("python3 -u my_agent.py", &[]), dir.path(), Some(&path)).unwrap();
        assert_eq!(spec.command.as_deref(), Some(python.to_str().unwrap()));
        assert_eq!(spec.args, vec!["-u".to_string(), agent.display().to_string()]);
    }

    #[test]
    fn words_that_are_not_files_here_are_kept_as_typed() {
        let dir = tempfile::tempdir().unwrap();
        let agent = script(dir.path(), "agent", 0o755);
        let spec = resolve_spec(&command_spec("./agent --mode fast in_workspace.py", &[]), dir.path(), None).unwrap();
        assert_eq!(spec.command.as_deref(), Some(agent.to_str().unwrap()));
        assert_eq!(spec.args, vec!["--mode", "fast", "in_workspace.py"]);
    }

    #[test]
    fn a_missing_or_non_executable_program_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let err = resolve_spec(&command_spec("./nope.py", &[]), dir.path(), None).unwrap_err();
        assert_eq!(err, AgentCmdError::NotFound(dir.path().join("nope.py")));
        assert!(err.to_string().starts_with("agent command not found at '/"), "{err}");
        let plain = script(dir.path(), "plain.py", 0o644);
        let err = resolve_spec(&command_spec("./plain.py", &[]), dir.path(), None).unwrap_err();
        assert_eq!(err, AgentCmdError::NotExecutable(plain));
        let err = resolve_spec(&command_spec("no-such-agent-xyz", &[]), dir.path(), Some(OsStr::new("/usr/bin")));
        assert_eq!(err.unwrap_err().to_string(), "agent command 'no-such-agent-xyz' not found on PATH");
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let err = resolve_spec(&command_spec("./sub", &[]), dir.path(), None).unwrap_err();
        assert!(matches!(err, AgentCmdError::NotAFile(_)), "{err}");
        assert_eq!(resolve_spec(&command_spec("  ", &[]), dir.path(), None).unwrap_err(), AgentCmdError::Empty);
    }

    #[test]
    fn with_agent_args_the_command_is_the_program_alone() {
        let dir = tempfile::tempdir().unwrap();
        let agent = script(dir.path(), "my agent", 0o755);
        let spec = resolve_spec(&command_spec("my agent", &["--x"]), dir.path(), None);
        assert_eq!(spec.unwrap_err(), AgentCmdError::NotOnPath("my agent".into()), "a bare name is looked up on PATH");
        let spec = resolve_spec(&command_spec("./my agent", &["--x"]), dir.path(), None).unwrap();
        assert_eq!(spec.command.as_deref(), Some(agent.to_str().unwrap()));
        assert_eq!(spec.args, vec!["--x"]);
    }

    #[test]
    fn a_path_with_dots_is_stored_normalised() {
        let root = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(root.path()).unwrap();
        std::fs::create_dir_all(root.join("tools")).unwrap();
        std::fs::create_dir_all(root.join("work")).unwrap();
        let agent = script(&root.join("tools"), "agent.py", 0o755);
        let helper = script(&root.join("tools"), "helper.py", 0o644);
        let spec = resolve_spec(&command_spec("../tools/agent.py ./../tools/helper.py", &[]), &root.join("work"), None);
        let spec = spec.unwrap();
        assert_eq!(spec.command.as_deref(), Some(agent.to_str().unwrap()), "no `..` in what is stored");
        assert_eq!(spec.args, vec![helper.display().to_string()]);
    }

    #[test]
    fn a_whole_command_naming_a_file_with_spaces_is_that_file() {
        let dir = tempfile::tempdir().unwrap();
        let dir = std::fs::canonicalize(dir.path()).unwrap();
        let agent = script(&dir, "my agent.sh", 0o755);
        let spec = resolve_spec(&command_spec("my agent.sh", &[]), &dir, None).unwrap();
        assert_eq!(spec.command.as_deref(), Some(agent.to_str().unwrap()));
        assert!(spec.args.is_empty());
        std::fs::create_dir(dir.join("sub dir")).unwrap();
        let nested = script(&dir.join("sub dir"), "run agent", 0o755);
        let spec = resolve_spec(&command_spec("sub dir/run agent", &[]), &dir, None).unwrap();
        assert_eq!(spec.command.as_deref(), Some(nested.to_str().unwrap()));
    }

    #[test]
    fn specs_without_a_command_are_unchanged() {
        let spec = AgentSpec::demo();
        assert_eq!(resolve_spec(&spec, Path::new("/"), None).unwrap(), spec);
    }
}
