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

/// `deploy/pin-base-images.sh` against a stand-in `docker` (no registry
/// here): every base image of the Dockerfile comes from an `ARG *_IMAGE`,
/// the script pins each to the digest `docker buildx imagetools inspect`
/// reports, pins again over an old digest, and leaves the file as it was
/// when a lookup fails.
#[test]
fn the_pin_script_pins_every_base_image_to_a_digest() {
    let root = PathBuf::from(ROOT);
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    let image_args: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("ARG "))
        .filter_map(|l| l.split_once('=').map(|(name, _)| name))
        .filter(|name| name.ends_with("_IMAGE"))
        .collect();
    for from in dockerfile.lines().filter(|l| l.starts_with("FROM ")) {
        let base = from.split_whitespace().nth(1).unwrap();
        let arg = base.trim_start_matches("${").trim_end_matches('}');
        assert!(
            base == "scratch" || (base.starts_with("${") && image_args.contains(&arg)),
            "`{from}`: a base image not taken from an ARG *_IMAGE the script pins"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    // docker buildx imagetools inspect NAME --format ...: a digest made from
    // NAME and $ROUND, or a failure for NAME containing "missing".
    let fake = bin.join("docker");
    std::fs::write(
        &fake,
        "#!/bin/sh\n[ \"$1 $2 $3\" = 'buildx imagetools inspect' ] || exit 2\n\
         case \"$4\" in *missing*) echo 'not found' >&2; exit 1;; esac\n\
         printf 'sha256:%s\\n' \"$(printf '%s %s' \"$4\" \"$ROUND\" | sha256sum | cut -c1-64)\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = dir.path().join("Dockerfile");
    std::fs::write(&copy, &dockerfile).unwrap();
    let pin = |round: &str| {
        std::process::Command::new("bash")
            .arg(root.join("deploy/pin-base-images.sh"))
            .arg(&copy)
            .env(
                "PATH",
                format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
            )
            .env("ROUND", round)
            .output()
            .unwrap()
    };
    let pinned_images = |text: &str| -> Vec<(String, String)> {
        text.lines()
            .filter_map(|l| l.strip_prefix("ARG "))
            .filter_map(|l| l.split_once('='))
            .filter(|(name, _)| name.ends_with("_IMAGE"))
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    };
    let digest_of = |image: &str, round: &str| -> String {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "printf '%s %s' '{image}' '{round}' | sha256sum | cut -c1-64"
            ))
            .output()
            .unwrap();
        format!("sha256:{}", String::from_utf8(out.stdout).unwrap().trim())
    };
    let original = pinned_images(&dockerfile);
    assert_eq!(original.len(), image_args.len());
    for round in ["1", "2"] {
        let out = pin(round);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let now = std::fs::read_to_string(&copy).unwrap();
        let pinned = pinned_images(&now);
        for ((name, before), (name_now, after)) in original.iter().zip(&pinned) {
            let tag = before.split('@').next().unwrap();
            assert_eq!(name, name_now);
            assert_eq!(after, &format!("{tag}@{}", digest_of(tag, round)));
        }
        // Nothing else changed.
        let others = |t: &str| -> Vec<String> {
            t.lines()
                .filter(|l| !(l.starts_with("ARG ") && l.contains("_IMAGE=")))
                .map(str::to_string)
                .collect()
        };
        assert_eq!(others(&now), others(&dockerfile));
    }
    // A lookup that fails leaves the file as it was and says so.
    let before = std::fs::read_to_string(&copy).unwrap();
    std::fs::write(
        &copy,
        before.replacen("ARG RUST_IMAGE=", "ARG RUST_IMAGE=missing/", 1),
    )
    .unwrap();
    let before = std::fs::read_to_string(&copy).unwrap();
    let out = pin("3");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    assert_eq!(std::fs::read_to_string(&copy).unwrap(), before);
}
