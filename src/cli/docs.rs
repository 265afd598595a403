//! `sipgate-sidecar completions SHELL` and `sipgate-sidecar man`: generated
//! from the command line's own definition, so they cannot drift from it.

use std::io::Write;

use clap::CommandFactory;

use crate::config::Cli;

/// The binary's name in scripts and on the manual page.
const BIN: &str = "sipgate-sidecar";

/// Writes the completion script for `shell`.
pub fn completions(shell: clap_complete::Shell, out: &mut impl Write) {
    clap_complete::generate(shell, &mut Cli::command(), BIN, out);
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
