//! The container image's build, as far as it can be checked without a
//! Docker daemon: the build context the Dockerfile sees (everything
//! `.dockerignore` lets through), laid out the way the build stage's
//! `COPY` lines lay it out, must hold a manifest cargo loads with every
//! target it declares, and a lock file that matches it (`--locked`).

use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Whether `path` (relative, `/`-separated) is in the build context:
/// `.dockerignore`'s rules in order, the last match wins (`*` and `!name`
/// or `!dir/` forms, which is all this project's file uses).
fn in_context(rules: &[(bool, String)], path: &str) -> bool {
    let mut included = true;
    for (negated, pattern) in rules {
        let pattern = pattern.trim_end_matches('/');
        let matches = pattern == "*" || path == pattern || path.starts_with(&format!("{pattern}/"));
        if matches {
            included = *negated;
        }
    }
    included
}

fn copy_tree(from: &Path, to: &Path, rel: &str, rules: &[(bool, String)]) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            if in_context(rules, &rel) {
                copy_tree(&entry.path(), &to.join(&name), &rel, rules);
            }
        }
    } else {
        std::fs::copy(from, to).unwrap();
    }
}

#[test]
fn the_images_build_context_holds_a_manifest_cargo_loads_locked() {
    let root = PathBuf::from(ROOT);
    let rules: Vec<(bool, String)> = std::fs::read_to_string(root.join(".dockerignore"))
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| match l.strip_prefix('!') {
            Some(p) => (true, p.to_string()),
            None => (false, l.to_string()),
        })
        .collect();
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    // The build stage: from its FROM to the next one.
    let build_stage: Vec<&str> = dockerfile
        .lines()
        .skip_while(|l| !(l.starts_with("FROM ") && l.contains(" AS build")))
        .skip(1)
        .take_while(|l| !l.starts_with("FROM "))
        .collect();
    let context = tempfile::tempdir().unwrap();
    let mut copied = Vec::new();
    for line in build_stage
        .iter()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let words: Vec<&str> = line.split_whitespace().skip(1).collect();
        let (sources, dest) = words.split_at(words.len() - 1);
        for source in sources {
            assert!(
                in_context(&rules, source),
                "the Dockerfile copies {source}, which .dockerignore leaves out"
            );
            let target = if dest[0].ends_with('/') || dest[0] == "./" {
                context.path().join(source)
            } else {
                context.path().join(dest[0])
            };
            copy_tree(&root.join(source), &target, source, &rules);
            copied.push(source.to_string());
        }
    }
    assert!(copied.iter().any(|c| c == "Cargo.toml"), "{copied:?}");
    let out = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(context.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo cannot load the image's build context (copied {copied:?}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let package = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "sipgate-sidecar")
        .expect("the package is in the context");
    let bin = package["targets"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["name"] == "sipgate-sidecar" && t["kind"][0] == "bin");
    assert!(bin, "the image builds --bin sipgate-sidecar");
    // The build stage's own cargo command, run in the context up to the
    // point where it would start compiling: with the target swapped for
    // one that does not exist, cargo loads the manifest (every declared
    // target's sources) and the lock, then names the binaries it has.
    let command = "cargo build --release --locked --bin sipgate-sidecar";
    assert!(
        dockerfile.contains(command),
        "the build stage runs `{command}`"
    );
    let out = std::process::Command::new(env!("CARGO"))
        .args(["build", "--release", "--locked", "--bin", "no-such-target"])
        .current_dir(context.path())
        .env("CARGO_TARGET_DIR", context.path().join("target"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no bin target named `no-such-target`")
            && stderr.contains("sipgate-sidecar"),
        "the image's `{command}` fails in its build context: {stderr}"
    );
}
