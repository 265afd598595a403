//! `sipgate-sidecar completions SHELL` and `sipgate-sidecar man`: generated
//! from the command line's own definition, so they cannot drift from it.

use std::io::Write;

use clap::CommandFactory;

use crate::{client::FailureKind, config::Cli};

/// The binary's name in scripts and on the manual page.
const BIN: &str = "sipgate-sidecar";

/// Writes the completion script for `shell`.
///
/// clap_complete's bash script names a subcommand's state one way where it
/// walks the words (`sipgate__sidecar__subcmd__calls`, the binary's `-`
/// as `__`) and another where it completes them
/// (`sipgate__subcmd__sidecar__subcmd__calls`), so past the first word
/// nothing matched: the second spelling is rewritten to the first.
pub fn completions(shell: clap_complete::Shell, out: &mut impl Write) {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), BIN, &mut script);
    if shell == clap_complete::Shell::Bash {
        let text = String::from_utf8_lossy(&script).replace(
            "sipgate__subcmd__sidecar__subcmd__",
            "sipgate__sidecar__subcmd__",
        );
        let text = text.replace(
            "        sipgate__subcmd__sidecar)",
            "        sipgate__sidecar)",
        );
        script = text.into_bytes();
    }
    // A closed stdout (`| head`) is the reader's choice.
    let _ = out.write_all(&script);
}

/// Writes the manual page (roff) of the binary and its subcommands.
pub fn man_page(out: &mut impl Write) -> std::io::Result<()> {
    page(&built(), out)
}

/// The command line as built (global flags given to every subcommand, each
/// subcommand's display name `sipgate-sidecar-bridge-zammad`).
fn built() -> clap::Command {
    let mut command = Cli::command().name(BIN).disable_help_subcommand(true);
    command.build();
    command
}

/// The page of the subcommand at `path` (e.g. `["bridge", "zammad"]`).
pub fn subcommand_page(path: &[String], out: &mut impl Write) -> Result<(), String> {
    let mut command = built();
    for (i, name) in path.iter().enumerate() {
        command = command.find_subcommand(name).cloned().ok_or_else(|| {
            format!(
                "no subcommand `{}`: `sipgate-sidecar {} --help` lists them",
                path[..=i].join(" "),
                path[..i].join(" ")
            )
        })?;
    }
    page(&command, out).map_err(|e| e.to_string())
}

/// Writes every page into `dir`: `sipgate-sidecar.1` and one per
/// subcommand (`sipgate-sidecar-serve.1`, `sipgate-sidecar-bridge-zammad.1`,
/// ...). Returns the files written.
pub fn write_pages(dir: &std::path::Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    fn walk(
        command: &clap::Command,
        dir: &std::path::Path,
        written: &mut Vec<std::path::PathBuf>,
    ) -> std::io::Result<()> {
        let name = command.get_display_name().unwrap_or(command.get_name());
        let path = dir.join(format!("{name}.1"));
        let mut file = std::fs::File::create(&path)?;
        page(command, &mut file)?;
        file.sync_all()?;
        written.push(path);
        for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
            walk(sub, dir, written)?;
        }
        Ok(())
    }
    let mut written = Vec::new();
    walk(&built(), dir, &mut written)?;
    Ok(written)
}

/// One page: clap_mangen's sections, then ENVIRONMENT and EXIT STATUS.
fn page(command: &clap::Command, out: &mut impl Write) -> std::io::Result<()> {
    let man = clap_mangen::Man::new(command.clone());
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    if command.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(out)?;
    }
    if command.has_subcommands() {
        man.render_subcommands_section(out)?;
    }
    out.write_all(environment_section(command).as_bytes())?;
    out.write_all(exit_status_section(command).as_bytes())?;
    if command.get_after_long_help().is_some() || command.get_after_help().is_some() {
        man.render_extra_section(out)?;
    }
    if command.get_version().is_some() {
        man.render_version_section(out)?;
    }
    Ok(())
}

/// `text` as roff body text.
fn roff(text: &str) -> String {
    text.lines()
        .map(|line| {
            let line = line.replace('\\', "\\e").replace('-', "\\-");
            if line.starts_with('.') || line.starts_with('\'') {
                format!("\\&{line}")
            } else {
                line
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn environment_section(command: &clap::Command) -> String {
    let mut section = String::from(".SH ENVIRONMENT\n");
    let mut entry = |name: &str, text: &str| {
        section.push_str(&format!(".TP\n\\fB{}\\fR\n{}\n", roff(name), roff(text)));
    };
    for arg in command.get_arguments().filter(|a| !a.is_hide_set()) {
        let Some(name) = arg.get_env().map(|e| e.to_string_lossy().into_owned()) else {
            continue;
        };
        let flag = arg
            .get_long()
            .map(|l| format!("--{l}"))
            .unwrap_or_else(|| arg.get_id().to_string());
        let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
        let mut text = format!("As {flag}: {help}");
        if crate::config::SECRET_VARIABLES.contains(&name.as_str()) {
            text.push_str(&format!(
                " A secret: or {name}_FILE, a file holding it (one trailing newline dropped)."
            ));
        }
        entry(&name, &text);
    }
    entry(
        "SIDECAR_LOG",
        "Log filter in tracing's env-filter syntax, e.g. info or sipgate_sidecar=debug (default info).",
    );
    entry(
        "NO_COLOR",
        "Set to anything but the empty string: no colour in help, usage errors and logs.",
    );
    section
}

fn exit_status_section(command: &clap::Command) -> String {
    let rows: Vec<(String, &str)> = if command.get_name() == "serve" {
        vec![
            (
                "0".into(),
                "Stopped cleanly (SIGTERM or SIGINT), everything accepted stored.",
            ),
            (
                "1".into(),
                "Could not start (a port, the database, the lock held by another process) or stopped with events it could neither store nor spool; the log says which.",
            ),
            (
                "2".into(),
                "A usage error or a configuration it refuses (--check-config says why).",
            ),
        ]
    } else {
        std::iter::once(("0".to_string(), "Done."))
            .chain(
                FailureKind::ALL
                    .iter()
                    .map(|kind| (kind.exit_code().to_string(), kind.meaning())),
            )
            .collect()
    };
    let mut section = String::from(".SH \"EXIT STATUS\"\n");
    for (code, text) in rows {
        section.push_str(&format!(".TP\n\\fB{code}\\fR\n{}\n", roff(text)));
    }
    section.push_str("Every failure also prints a sentence on stderr saying what to fix.\n");
    section
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_and_the_man_page_name_the_commands() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut script = Vec::new();
            completions(shell, &mut script);
            let script = String::from_utf8(script).unwrap();
            assert!(script.contains(BIN), "{shell}: {script}");
            assert!(script.contains("set-done"), "{shell} completes subcommands");
        }
        let mut page = Vec::new();
        man_page(&mut page).unwrap();
        let page = String::from_utf8(page).unwrap();
        assert!(page.starts_with(".ie") || page.contains(".TH"), "{page}");
        assert!(
            page.contains("sipgate\\-sidecar") && page.contains("serve"),
            "{page}"
        );
        assert!(page.contains(".SH ENVIRONMENT") && page.contains(".SH \"EXIT STATUS\""));
    }

    #[test]
    fn every_subcommand_has_a_page_with_its_environment_and_exit_status() {
        let dir = tempfile::tempdir().unwrap();
        let pages = write_pages(dir.path()).unwrap();
        let names: Vec<String> = pages
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for name in [
            "sipgate-sidecar.1",
            "sipgate-sidecar-serve.1",
            "sipgate-sidecar-bridge-zammad.1",
            "sipgate-sidecar-settings-block-add.1",
            "sipgate-sidecar-calls-set-done.1",
        ] {
            assert!(names.contains(&name.to_string()), "{name} in {names:?}");
        }
        let serve = std::fs::read_to_string(dir.path().join("sipgate-sidecar-serve.1")).unwrap();
        assert!(serve.contains("\\fBSIDECAR_HTTP_ADDR\\fR"), "{serve}");
        assert!(serve.contains("SIDECAR_WEBHOOK_TOKEN_FILE"), "{serve}");
        assert!(serve.contains("could neither store nor spool"), "{serve}");
        let zammad =
            std::fs::read_to_string(dir.path().join("sipgate-sidecar-bridge-zammad.1")).unwrap();
        assert!(
            zammad.contains("\\fBSIDECAR_BRIDGE_CTI_URL\\fR"),
            "{zammad}"
        );
        // Global flags reach every page.
        assert!(zammad.contains("\\fBSIDECAR_SERVER\\fR"), "{zammad}");
        assert!(zammad.contains("cannot be reached"), "{zammad}");

        let mut page = Vec::new();
        subcommand_page(&["bridge".into(), "zammad".into()], &mut page).unwrap();
        assert_eq!(String::from_utf8(page).unwrap(), zammad);
        let e = subcommand_page(&["bridge".into(), "nope".into()], &mut Vec::new()).unwrap_err();
        assert!(e.contains("bridge nope"), "{e}");
    }
}
