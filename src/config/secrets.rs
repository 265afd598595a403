//! Secrets from files: every secret-bearing environment variable `SIDECAR_X`
//! can instead be given as `SIDECAR_X_FILE`, a file holding the value (one
//! trailing newline is dropped). Flags show up in `ps` and environment
//! values in `/proc/<pid>/environ` of the same user; a file readable only by
//! the service (or a systemd credential, `SIDECAR_X_FILE=%d/x` with
//! `LoadCredential=`) keeps the secret out of both.

use std::path::Path;

/// The environment variables that carry secrets (tokens, passwords, URLs
/// with a token or credentials in them).
pub const SECRET_VARIABLES: &[&str] = &[
    "SIDECAR_WEBHOOK_TOKEN",
    "SIDECAR_BASIC_AUTH",
    "SIDECAR_GRPC_TOKEN",
    "SIDECAR_ZAMMAD_CTI_URL",
    "SIDECAR_FORWARD_URL",
    "SIDECAR_FORWARD_SECRET",
    "SIDECAR_FORWARD_STANDARD_SECRET",
    "SIDECAR_BRIDGE_CTI_URL",
    "SIDECAR_BRIDGE_URL",
    "SIDECAR_BRIDGE_SECRET",
    "SIDECAR_BRIDGE_STANDARD_SECRET",
    "SIDECAR_ZAMMAD_API_TOKEN",
    // A postgres:// URL may hold a password: SIDECAR_DATABASE_FILE.
    "SIDECAR_DATABASE",
];

/// Reads every `SIDECAR_X_FILE` that is set and returns `(SIDECAR_X, value)`
/// pairs for the caller to put into the environment before the command line
/// is parsed. Both `SIDECAR_X` and `SIDECAR_X_FILE` set is an error, as is a
/// file that cannot be read.
pub fn secrets_from_files(
    get: impl Fn(&str) -> Option<String>,
) -> Result<Vec<(&'static str, String)>, String> {
    let mut found = Vec::new();
    for &name in SECRET_VARIABLES {
        let file_var = format!("{name}_FILE");
        let Some(path) = get(&file_var).filter(|p| !p.is_empty()) else {
            continue;
        };
        if get(name).is_some_and(|v| !v.is_empty()) {
            return Err(format!("set {name} or {file_var}, not both"));
        }
        let value = read_secret(Path::new(&path))
            .map_err(|e| format!("{file_var}: cannot read {path}: {e}"))?;
        found.push((name, value));
    }
    Ok(found)
}

/// A secret file's value: its content less one trailing newline.
pub(crate) fn read_secret(path: &Path) -> std::io::Result<String> {
    let mut value = std::fs::read_to_string(path)?;
    if value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn file_values_replace_the_variable_and_both_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "s3cret\n").unwrap();
        let mut env = HashMap::from([(
            "SIDECAR_WEBHOOK_TOKEN_FILE".to_string(),
            token.display().to_string(),
        )]);
        let get = |env: &HashMap<String, String>| {
            let env = env.clone();
            move |k: &str| env.get(k).cloned()
        };
        assert_eq!(
            secrets_from_files(get(&env)).unwrap(),
            vec![("SIDECAR_WEBHOOK_TOKEN", "s3cret".to_string())]
        );
        env.insert("SIDECAR_WEBHOOK_TOKEN".into(), "other".into());
        assert!(
            secrets_from_files(get(&env))
                .unwrap_err()
                .contains("not both")
        );
        env.remove("SIDECAR_WEBHOOK_TOKEN");
        env.insert("SIDECAR_GRPC_TOKEN_FILE".into(), "/nonexistent/x".into());
        assert!(
            secrets_from_files(get(&env))
                .unwrap_err()
                .contains("SIDECAR_GRPC_TOKEN_FILE: cannot read /nonexistent/x")
        );
    }
}
