//! The completion scripts, sourced in the real shells: every word of a
//! command line completes, not only the first. Bash is always there; zsh
//! and fish are checked where they are installed (`.ci/run` installs them).

use std::process::Command;

const BINARY: &str = env!("CARGO_BIN_EXE_sipgate-sidecar");

fn script(shell: &str) -> String {
    let out = Command::new(BINARY)
        .args(["completions", shell])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// What bash offers after `words` (the last one being typed).
fn bash_completes(script_path: &std::path::Path, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let current = words.last().unwrap();
    let previous = words[words.len() - 2];
    let program = format!(
        "source '{}'\n\
         complete -p sipgate-sidecar >/dev/null || exit 3\n\
         COMP_WORDS=({})\n\
         COMP_CWORD={}\n\
         COMP_LINE='{}'\n\
         _sipgate__sidecar sipgate-sidecar '{current}' '{previous}'\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script_path.display(),
        quoted.join(" "),
        words.len() - 1,
        words.join(" "),
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&program)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_completes_every_word_not_only_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sipgate-sidecar.bash");
    std::fs::write(&path, script("bash")).unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["sipgate-sidecar", ""], "calls"),
        (&["sipgate-sidecar", "calls", ""], "set-done"),
        (&["sipgate-sidecar", "calls", "list", "--"], "--limit"),
        (&["sipgate-sidecar", "settings", ""], "block"),
        (&["sipgate-sidecar", "settings", "block", ""], "add"),
        (&["sipgate-sidecar", "bridge", ""], "zammad-tickets"),
        (
            &["sipgate-sidecar", "bridge", "zammad-tickets", "--"],
            "--close-when-reached",
        ),
        (&["sipgate-sidecar", "serve", "--"], "--database"),
    ];
    for (words, expected) in cases {
        let offered = bash_completes(&path, words);
        assert!(
            offered.iter().any(|o| o == expected),
            "after {words:?} bash offers {offered:?}, not {expected}"
        );
    }
}

#[test]
fn zsh_and_fish_load_their_scripts_and_fish_completes_subcommands() {
    let dir = tempfile::tempdir().unwrap();
    if Command::new("zsh").arg("--version").output().is_ok() {
        let path = dir.path().join("_sipgate-sidecar");
        std::fs::write(&path, script("zsh")).unwrap();
        let out = Command::new("zsh")
            .arg("-c")
            .arg(format!(
                "autoload -U compinit && compinit -u -D && source '{}' && whence -w _sipgate-sidecar",
                path.display()
            ))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("function"),
            "zsh: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        eprintln!("SKIPPED zsh: not installed");
    }
    if Command::new("fish").arg("--version").output().is_ok() {
        let path = dir.path().join("sipgate-sidecar.fish");
        std::fs::write(&path, script("fish")).unwrap();
        for (line, expected) in [
            ("sipgate-sidecar calls ", "set-done"),
            ("sipgate-sidecar bridge ", "zammad-tickets"),
            ("sipgate-sidecar calls list --", "--limit"),
        ] {
            let out = Command::new("fish")
                .arg("--no-config")
                .arg("-c")
                .arg(format!("source '{}'; complete -C '{line}'", path.display()))
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.lines().any(|l| l.split('\t').next() == Some(expected)),
                "fish after {line:?}: {text}"
            );
        }
    } else {
        eprintln!("SKIPPED fish: not installed");
    }
}
