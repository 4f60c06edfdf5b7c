//! The one-line install for people who do not have roundtable yet: the installers `dist` attaches
//! to every release (dist-workspace.toml, docs/RELEASING.md), addressed from the package's
//! `repository` and version at compile time. Shown next to every share link (`serve --mint`,
//! `host --mint`, the window's invite box).

/// The release tag `dist` publishes this version under (`vX.Y.Z`).
pub fn release_tag() -> String {
    format!("v{}", env!("CARGO_PKG_VERSION"))
}

/// Where this version's release files are downloaded from:
/// `https://github.com/OWNER/REPO/releases/download/vX.Y.Z`.
pub fn release_download_url() -> String {
    let repository = env!("CARGO_PKG_REPOSITORY").trim_end_matches('/').trim_end_matches(".git");
    format!("{repository}/releases/download/{}", release_tag())
}

/// The shell installer's file name in the release (`dist`: `{app}-installer.sh`).
pub const SHELL_INSTALLER: &str = "roundtable-installer.sh";
/// The PowerShell installer's file name in the release (`dist`: `{app}-installer.ps1`).
pub const POWERSHELL_INSTALLER: &str = "roundtable-installer.ps1";

/// Linux and macOS: `curl --proto '=https' --tlsv1.2 -LsSf URL/roundtable-installer.sh | sh`
/// (the form `dist` prints for its shell installer).
pub fn install_one_liner() -> String {
    format!("curl --proto '=https' --tlsv1.2 -LsSf {}/{SHELL_INSTALLER} | sh", release_download_url())
}

/// Windows: `powershell -ExecutionPolicy Bypass -c "irm URL/roundtable-installer.ps1 | iex"`.
pub fn install_one_liner_windows() -> String {
    format!(r#"powershell -ExecutionPolicy Bypass -c "irm {}/{POWERSHELL_INSTALLER} | iex""#, release_download_url())
}

/// One line for the terminal, after a share link.
pub fn install_hint() -> String {
    format!("Not installed yet? {}   (Windows: {})", install_one_liner(), install_one_liner_windows())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_one_liners_download_this_versions_installers_from_the_repositorys_release() {
        let repository = env!("CARGO_PKG_REPOSITORY");
        assert!(repository.starts_with("https://github.com/"), "{repository}");
        let base = format!("{repository}/releases/download/v{}", env!("CARGO_PKG_VERSION"));
        assert_eq!(
            install_one_liner(),
            format!("curl --proto '=https' --tlsv1.2 -LsSf {base}/roundtable-installer.sh | sh")
        );
        assert_eq!(
            install_one_liner_windows(),
            format!(r#"powershell -ExecutionPolicy Bypass -c "irm {base}/roundtable-installer.ps1 | iex""#)
        );
        let hint = install_hint();
        assert!(hint.starts_with("Not installed yet? curl ") && hint.contains("(Windows: powershell "), "{hint}");
        assert!(!hint.contains('\n'));
    }

    /// The names `dist` gives the installers: `{package}-installer.sh` / `.ps1`, the package
    /// being the one binary dist-workspace.toml distributes.
    #[test]
    fn the_installer_names_are_the_ones_dist_generates_for_this_package() {
        assert_eq!(SHELL_INSTALLER, format!("{}-installer.sh", env!("CARGO_PKG_NAME")));
        assert_eq!(POWERSHELL_INSTALLER, format!("{}-installer.ps1", env!("CARGO_PKG_NAME")));
        // Both installers are the ones dist is configured to make (.ci/dist-check builds them
        // and checks the shell one downloads from `release_download_url`).
        let config = include_str!("../../dist-workspace.toml");
        assert!(config.contains(r#"installers = ["shell", "powershell"]"#), "{config}");
    }
}
