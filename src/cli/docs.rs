//! `sipgate-sidecar completions SHELL` and `sipgate-sidecar man`: generated
//! from the command line's own definition, so they cannot drift from it.

use std::io::Write;

use clap::CommandFactory;

use crate::config::Cli;

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
    clap_mangen::Man::new(Cli::command().name(BIN)).render(out)
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
    }
}
