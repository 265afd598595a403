//! The configuration file (`--config FILE`, TOML) and how the command line
//! is parsed with it.
//!
//! The file's keys are the long flag names (`grpc-addr = "127.0.0.1:50051"`,
//! `allow-sources = ["217.116.118.254", "212.9.46.32"]`). Its values become
//! the flags' defaults before the real parse, so clap's own order
//! (flag, then environment variable, then default) gives
//! **flag > environment > file > built-in default**. A key applies to every
//! subcommand with that flag: `max-attempts` to `serve` and to `bridge`.
//! [`check_config`] is what `serve --check-config` prints.

use std::{
    collections::{BTreeMap, BTreeSet},
    ffi::OsString,
    path::{Path, PathBuf},
};

use clap::{Arg, ArgAction, ArgMatches, CommandFactory, FromArgMatches, parser::ValueSource};

use super::{Cli, Command, DEFAULT_GRPC_ADDR};

/// The environment variable naming the configuration file (`--config`).
pub const CONFIG_ENV: &str = "SIDECAR_CONFIG";

/// Flags that are not settings: never read from the file, not shown by `--check-config`.
const NOT_SETTINGS: &[&str] = &["config", "check-config", "help", "version"];

/// Global flags that only clients use: not part of `serve`'s configuration.
const CLIENT_ONLY: &[&str] = &["server", "client-cert", "client-key"];

/// Where an effective setting came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Flag,
    Env,
    File,
    Default,
}

/// The command line, parsed with the configuration file's values.
#[derive(Debug)]
pub struct Parsed {
    pub cli: Cli,
    matches: ArgMatches,
    /// The configuration file and the keys it set.
    file: Option<(PathBuf, BTreeSet<String>)>,
}

/// Why the command line could not be parsed.
#[derive(Debug)]
pub enum ParseError {
    /// A usage error (or `--help`, `--version`): clap prints and exits.
    Clap(clap::Error),
    /// The configuration file is missing, not TOML, or sets a key wrongly.
    File(String),
}

/// Parses `args` (with the binary name first), reading the configuration
/// file named by `--config` or, failing that, by `SIDECAR_CONFIG` (`env`).
pub fn parse(
    args: Vec<OsString>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Parsed, ParseError> {
    let path =
        config_path(&args).or_else(|| env(CONFIG_ENV).filter(|p| !p.is_empty()).map(PathBuf::from));
    let mut command = Cli::command();
    let mut file = None;
    if let Some(path) = path {
        let table = load(&path).map_err(ParseError::File)?;
        let (with_file, keys) = apply(command, &table, &path).map_err(ParseError::File)?;
        command = with_file;
        file = Some((path, keys));
    }
    let matches = command
        .try_get_matches_from(args)
        .map_err(ParseError::Clap)?;
    let cli = Cli::from_arg_matches(&matches).map_err(ParseError::Clap)?;
    Ok(Parsed { cli, matches, file })
}

/// The value of `--config FILE` or `--config=FILE` on the command line.
fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut args = args.iter().skip(1);
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy();
        if text == "--" {
            break;
        }
        if text == "--config" {
            return args.next().map(PathBuf::from);
        }
        if let Some(value) = text.strip_prefix("--config=") {
            return Some(PathBuf::from(value));
        }
    }
    None
}

/// A file that holds a secret and that group or others may read: a
/// warning saying so.
pub fn readable_by_others(path: &Path, flag: &str, what: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then(|| {
        format!(
            "{flag} {}: {what} that other users may read (mode {mode:o}); chmod 600 it",
            path.display()
        )
    })
}

/// Reads and parses the TOML file.
pub fn load(path: &Path) -> Result<toml::Table, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("config file {}: cannot read it: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| syntax_error(path, &text, &e))
}

/// A TOML syntax error by line and column, without the line itself: the
/// line may hold a secret (`grpc-token = "…`).
fn syntax_error(path: &Path, text: &str, error: &toml::de::Error) -> String {
    let position = error.span().map(|span| {
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        format!(" at line {line}, column {column}")
    });
    format!(
        "config file {}: not valid TOML{}: {}",
        path.display(),
        position.unwrap_or_default(),
        error.message().trim()
    )
}

/// The flags a file may set: the global flags and `serve`'s, by long name.
fn settable(command: &clap::Command) -> BTreeMap<String, Arg> {
    let serve = command
        .find_subcommand("serve")
        .into_iter()
        .flat_map(|s| s.get_arguments());
    command
        .get_arguments()
        .chain(serve)
        .filter_map(|arg| Some((arg.get_long()?.to_string(), arg.clone())))
        .filter(|(long, _)| !NOT_SETTINGS.contains(&long.as_str()))
        .collect()
}

fn takes_no_value(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse)
}

fn takes_many(arg: &Arg) -> bool {
    arg.get_value_delimiter().is_some() || matches!(arg.get_action(), ArgAction::Append)
}

/// One file value as the strings a flag would take, checked by the flag's own parser.
fn values_of(
    arg: &Arg,
    key: &str,
    value: &toml::Value,
    path: &Path,
) -> Result<Vec<String>, String> {
    let file = path.display();
    let wrong = |expected: &str| {
        format!(
            "config file {file}: '{key}' must be {expected}, not {}",
            value.type_str()
        )
    };
    let scalar = |v: &toml::Value| match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        _ => None,
    };
    let values = if takes_no_value(arg) {
        match value {
            toml::Value::Boolean(b) => return Ok(vec![b.to_string()]),
            _ => return Err(wrong("true or false")),
        }
    } else if takes_many(arg) {
        match value {
            toml::Value::Array(items) => items
                .iter()
                .map(|item| scalar(item).ok_or_else(|| wrong("a list of strings")))
                .collect::<Result<Vec<_>, _>>()?,
            toml::Value::String(s) => match arg.get_value_delimiter() {
                Some(d) => s.split(d).map(str::to_string).collect(),
                None => vec![s.clone()],
            },
            _ => return Err(wrong("a list of strings")),
        }
    } else {
        vec![scalar(value).ok_or_else(|| wrong("a string or a number"))?]
    };
    // The flag's own parser decides, as on the command line.
    let probe_arg = arg.clone().required(false).global(false).env(None::<&str>);
    let probe = clap::Command::new("config")
        .no_binary_name(true)
        .arg(probe_arg);
    for v in &values {
        if let Err(e) = probe.clone().try_get_matches_from([format!("--{key}={v}")]) {
            let reason = std::error::Error::source(&e)
                .map(|s| s.to_string())
                .unwrap_or_else(|| {
                    let text = e.to_string();
                    let first = text.lines().next().unwrap_or_default();
                    first.strip_prefix("error: ").unwrap_or(first).to_string()
                });
            let shown = if arg.is_hide_env_values_set() {
                "<redacted>"
            } else {
                v
            };
            return Err(format!("config file {file}: '{key}' = '{shown}': {reason}"));
        }
    }
    Ok(values)
}

/// `command` with the file's values as the defaults of the flags they name;
/// also returns the keys that were set. An unknown key or a value of the
/// wrong type is an error naming the key and the file.
pub fn apply(
    command: clap::Command,
    table: &toml::Table,
    path: &Path,
) -> Result<(clap::Command, BTreeSet<String>), String> {
    let settable = settable(&command);
    let mut defaults: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (key, value) in table {
        let Some(arg) = settable.get(key) else {
            return Err(format!(
                "config file {}: unknown key '{key}' (keys are the long flag names of `serve` \
                 and of the client flags, e.g. grpc-addr or server; see `sipgate-sidecar serve --help`)",
                path.display()
            ));
        };
        defaults.insert(key.clone(), values_of(arg, key, value, path)?);
    }
    // Clients on the server's host dial the server's gRPC address, and
    // `bridge status` its webhook listener's /readyz.
    let webhook_scheme = if defaults.contains_key("tls-cert") {
        "https"
    } else {
        "http"
    };
    for (listen, dial, scheme) in [
        ("grpc-addr", "server", "http"),
        ("http-addr", "http-url", webhook_scheme),
    ] {
        if !defaults.contains_key(dial)
            && let Some(addr) = defaults
                .get(listen)
                .and_then(|v| v.first()?.parse::<std::net::SocketAddr>().ok())
        {
            // An unspecified address is dialled on loopback, as the defaults are.
            let ip = if addr.ip().is_unspecified() {
                DEFAULT_GRPC_ADDR.ip()
            } else {
                addr.ip()
            };
            let at = std::net::SocketAddr::new(ip, addr.port());
            defaults.insert(dial.into(), vec![format!("{scheme}://{at}")]);
        }
    }
    let keys = defaults.keys().cloned().collect();
    Ok((set_defaults(command, &defaults), keys))
}

/// Sets the defaults on every flag of that long name, in every subcommand.
fn set_defaults(
    mut command: clap::Command,
    defaults: &BTreeMap<String, Vec<String>>,
) -> clap::Command {
    let ids: Vec<(String, Vec<String>)> = command
        .get_arguments()
        .filter_map(|arg| {
            let values = defaults.get(arg.get_long()?)?;
            Some((arg.get_id().to_string(), values.clone()))
        })
        .collect();
    for (id, values) in ids {
        // The database is shown unless it holds a password.
        let plain_database = id == "database"
            && values
                .iter()
                .all(|v| crate::text::redact_url_password(v) == *v);
        command = command.mut_arg(id, |arg| {
            let secret = arg.is_hide_env_values_set() && !plain_database;
            arg.default_values(values).hide_default_value(secret)
        });
    }
    command.mut_subcommands(|sub| set_defaults(sub, defaults))
}

/// One line of `--check-config`.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    pub key: String,
    /// `None`: not set. Secrets are already redacted.
    pub value: Option<toml::Value>,
    pub source: Source,
    /// The environment variable the flag reads.
    pub env: Option<String>,
}

impl Parsed {
    /// The configuration file, if one was read.
    /// A config file that sets a secret and that other users may read.
    pub fn config_file_warning(&self) -> Option<String> {
        let path = self.config_file()?;
        let sets_a_secret = self.serve_settings().iter().any(|s| {
            s.source == Source::File
                && s.value
                    .as_ref()
                    .is_some_and(|v| v.to_string().contains("<redacted>"))
        });
        if !sets_a_secret {
            return None;
        }
        readable_by_others(path, "--config", "a config file with secrets")
    }

    pub fn config_file(&self) -> Option<&Path> {
        self.file.as_ref().map(|(path, _)| path.as_path())
    }

    /// Every setting of `serve` with its effective value (secrets redacted)
    /// and where it came from.
    pub fn serve_settings(&self) -> Vec<Setting> {
        let command = Cli::command();
        let Some(matches) = self.matches.subcommand_matches("serve") else {
            return Vec::new();
        };
        let file_keys = self.file.as_ref().map(|(_, keys)| keys);
        settable(&command)
            .into_iter()
            .filter(|(key, _)| !CLIENT_ONLY.contains(&key.as_str()))
            .map(|(key, arg)| {
                let id = arg.get_id().as_str();
                let source = match matches.value_source(id) {
                    Some(ValueSource::CommandLine) => Source::Flag,
                    Some(ValueSource::EnvVariable) => Source::Env,
                    _ if file_keys.is_some_and(|keys| keys.contains(&key)) => Source::File,
                    _ => Source::Default,
                };
                let value = if takes_no_value(&arg) {
                    Some(toml::Value::Boolean(matches.get_flag(id)))
                } else {
                    let raw: Vec<String> = matches
                        .get_raw(id)
                        .into_iter()
                        .flatten()
                        .map(|v| v.to_string_lossy().into_owned())
                        .collect();
                    if raw.is_empty() || raw.iter().all(String::is_empty) {
                        None
                    } else if id == "database" {
                        // A PostgreSQL URL may hold a password.
                        Some(toml::Value::String(crate::text::redact_url_password(
                            &raw.concat(),
                        )))
                    } else if arg.is_hide_env_values_set() {
                        Some(toml::Value::String("<redacted>".into()))
                    } else if takes_many(&arg) {
                        Some(toml::Value::Array(
                            raw.into_iter().map(toml::Value::String).collect(),
                        ))
                    } else {
                        let raw = raw.concat();
                        // Numbers as numbers: the file takes either form.
                        let plain = raw.bytes().all(|b| b.is_ascii_digit())
                            && (!raw.starts_with('0') || raw == "0");
                        Some(match raw.parse::<i64>() {
                            Ok(n) if plain => toml::Value::Integer(n),
                            _ => toml::Value::String(raw),
                        })
                    }
                };
                Setting {
                    key,
                    value,
                    source,
                    env: arg.get_env().map(|e| e.to_string_lossy().into_owned()),
                }
            })
            .collect()
    }
}

/// What `serve --check-config` prints: every setting as a TOML line with
/// where it came from, secrets redacted; or why the configuration is invalid.
/// Opens no database and binds no port.
pub fn check_config(parsed: &Parsed) -> Result<String, String> {
    let Command::Serve(args) = &parsed.cli.command else {
        return Err("--check-config belongs to `serve`".into());
    };
    let config = args.as_ref().clone().into_config()?;
    crate::preflight(&config).map_err(|e| format!("{e:#}"))?;
    for (flag, path) in [
        (
            "--tls-cert",
            config.http_listener.tls.as_ref().map(|t| &t.cert),
        ),
        (
            "--tls-key",
            config.http_listener.tls.as_ref().map(|t| &t.key),
        ),
        (
            "--grpc-tls-cert",
            config.grpc_listener.tls.as_ref().map(|t| &t.cert),
        ),
        (
            "--grpc-tls-key",
            config.grpc_listener.tls.as_ref().map(|t| &t.key),
        ),
        ("--grpc-client-ca", config.grpc_listener.client_ca.as_ref()),
        ("--signature-key", config.signature_key.as_ref()),
        ("--ca-cert", parsed.cli.client.ca_cert.as_ref()),
    ] {
        if let Some(path) = path {
            std::fs::File::open(path)
                .map_err(|e| format!("{flag} {}: cannot read it: {e}", path.display()))?;
        }
    }
    let mut out = String::from("# sipgate-sidecar serve: the effective configuration");
    match parsed.config_file() {
        Some(path) => out.push_str(&format!(" (config file {})\n", path.display())),
        None => out.push_str(" (no config file)\n"),
    }
    out.push_str("# after each value: where it came from (flag, env, file or default); secrets are redacted\n");
    for setting in parsed.serve_settings() {
        let source = match (setting.source, &setting.env) {
            (Source::Flag, _) => "flag".to_string(),
            (Source::Env, Some(env)) => format!("env {env}"),
            (Source::Env, None) => "env".to_string(),
            (Source::File, _) => "file".to_string(),
            (Source::Default, _) => "default".to_string(),
        };
        match setting.value {
            Some(value) => out.push_str(&format!("{} = {value}  # {source}\n", setting.key)),
            None => out.push_str(&format!("# {} is not set\n", setting.key)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        file
    }

    fn parse_with(file: Option<&Path>, args: &[&str]) -> Result<Parsed, ParseError> {
        let mut argv: Vec<OsString> = vec!["sipgate-sidecar".into()];
        argv.extend(args.iter().map(OsString::from));
        let path = file.map(|p| p.display().to_string());
        parse(argv, move |name| {
            (name == CONFIG_ENV).then(|| path.clone()).flatten()
        })
    }

    fn serve(parsed: &Parsed) -> &super::super::ServeArgs {
        match &parsed.cli.command {
            Command::Serve(args) => args,
            other => panic!("serve parses as serve, not {other:?}"),
        }
    }

    fn setting<'a>(settings: &'a [Setting], key: &str) -> &'a Setting {
        settings
            .iter()
            .find(|s| s.key == key)
            .unwrap_or_else(|| panic!("{key} is listed"))
    }

    #[test]
    fn a_flag_beats_the_file_and_the_file_beats_the_default() {
        let config = file(
            "grpc-addr = \"127.0.0.1:6001\"\nreply-deadline-ms = 250\ncountry-code = \"43\"\n\
             allow-sources = [\"217.116.118.254\", \"10.0.0.0/8\"]\nhttp2 = true\nmax-attempts = 9\n",
        );
        let parsed = parse_with(
            Some(config.path()),
            &["serve", "--reply-deadline-ms", "700"],
        )
        .unwrap();
        let args = serve(&parsed);
        assert_eq!(args.reply_deadline_ms, 700, "the flag wins");
        assert_eq!(
            args.grpc_addr.to_string(),
            "127.0.0.1:6001",
            "the file beats the default"
        );
        assert_eq!(args.country_code, "43");
        assert!(args.http2);
        assert_eq!(args.delivery.max_attempts, 9);
        let nets: Vec<String> = args.allow_sources.iter().map(|n| n.to_string()).collect();
        assert_eq!(nets, ["217.116.118.254/32", "10.0.0.0/8"]);
        assert_eq!(args.retention_days, 365, "the default where neither says");
        let settings = parsed.serve_settings();
        assert_eq!(setting(&settings, "reply-deadline-ms").source, Source::Flag);
        assert_eq!(setting(&settings, "grpc-addr").source, Source::File);
        assert_eq!(setting(&settings, "retention-days").source, Source::Default);
        // Clients dial the server's gRPC address from the same file.
        assert_eq!(parsed.cli.client.server, "http://127.0.0.1:6001");
        // --config on the command line is read too, and a key reaches the bridges.
        let flagged = parse_with(
            None,
            &[
                "bridge",
                "webhook",
                "--url",
                "http://127.0.0.1:1/",
                "--config",
                &config.path().display().to_string(),
            ],
        )
        .unwrap();
        let Command::Bridge {
            command: super::super::BridgeCommand::Webhook { delivery, .. },
        } = flagged.cli.command
        else {
            panic!("bridge webhook parses");
        };
        assert_eq!(delivery.max_attempts, 9);
    }

    #[test]
    fn a_syntax_error_names_line_and_column_and_never_echoes_the_line() {
        for text in [
            "grpc-token = \"s3cr3t-token-value\n",
            "database = \"postgres://u:s3cr3t-token-value@db/x\"\nwebhook-token = s3cr3t-token-value\n",
        ] {
            let f = file(text);
            let error = load(f.path()).unwrap_err();
            assert!(!error.contains("s3cr3t"), "{error}");
            assert!(error.contains("not valid TOML at line"), "{error}");
        }
        let f = file("a = 1\nwebhook-token = s3cr3t\n");
        let error = load(f.path()).unwrap_err();
        assert!(error.contains("line 2, column"), "{error}");
    }

    #[test]
    fn unknown_keys_and_wrong_types_name_the_key_and_the_file() {
        let cases = [
            ("grpc-adr = \"127.0.0.1:1\"", "unknown key 'grpc-adr'"),
            (
                "reply-deadline-ms = \"soon\"",
                "'reply-deadline-ms' = 'soon': invalid digit",
            ),
            (
                "reply-deadline-ms = true",
                "'reply-deadline-ms' must be a string or a number, not boolean",
            ),
            (
                "http2 = \"yes\"",
                "'http2' must be true or false, not string",
            ),
            (
                "allow-sources = [\"sipgate\"]",
                "'allow-sources' = 'sipgate': 'sipgate' is not an IP address",
            ),
            ("signature = \"maybe\"", "'signature' = 'maybe'"),
            (
                "grpc-addr = [\"127.0.0.1:1\"]",
                "must be a string or a number, not array",
            ),
            ("check-config = true", "unknown key 'check-config'"),
            ("[serve]\ngrpc-addr = \"x\"", "unknown key 'serve'"),
            ("grpc-addr = ", "not valid TOML"),
        ];
        for (text, expected) in cases {
            let config = file(text);
            let Err(ParseError::File(message)) = parse_with(Some(config.path()), &["serve"]) else {
                panic!("{text} is refused");
            };
            assert!(message.contains(expected), "{text}: {message}");
            assert!(
                message.contains(&config.path().display().to_string()),
                "{message}"
            );
        }
        let Err(ParseError::File(message)) =
            parse_with(Some(Path::new("/nonexistent/sidecar.toml")), &["serve"])
        else {
            panic!("a missing file is refused");
        };
        assert!(
            message.contains("/nonexistent/sidecar.toml: cannot read it"),
            "{message}"
        );
    }

    #[test]
    fn check_config_redacts_every_secret() {
        let config = file(
            "webhook-token = \"tok-file-secret\"\nbasic-auth = \"sipgate:pw-file-secret\"\n\
             grpc-token = \"grpc-file-secret\"\n\
             zammad-cti-url = \"https://zammad.example.com/api/v1/cti/zammad-file-secret\"\n\
             forward-url = \"https://crm.example.com/hook?key=fwd-url-secret\"\n\
             forward-secret = \"fwd-file-secret\"\ndatabase = \"/var/lib/sidecar/s.db\"\n",
        );
        let parsed = parse_with(Some(config.path()), &["serve", "--check-config"]).unwrap();
        let report = check_config(&parsed).unwrap();
        for secret in [
            "tok-file-secret",
            "pw-file-secret",
            "grpc-file-secret",
            "zammad-file-secret",
            "fwd-url-secret",
            "fwd-file-secret",
        ] {
            assert!(!report.contains(secret), "{secret} in:\n{report}");
        }
        for line in [
            "webhook-token = \"<redacted>\"  # file",
            "basic-auth = \"<redacted>\"  # file",
            "grpc-token = \"<redacted>\"  # file",
            "zammad-cti-url = \"<redacted>\"  # file",
            "forward-url = \"<redacted>\"  # file",
            "forward-secret = \"<redacted>\"  # file",
            "database = \"/var/lib/sidecar/s.db\"  # file",
            "http-addr = \"0.0.0.0:8080\"  # default",
            "check-config",
        ] {
            if line == "check-config" {
                assert!(!report.contains(line), "{report}");
            } else {
                assert!(report.contains(line), "{line} in:\n{report}");
            }
        }
        // The help text shows the file's values as defaults, but not secrets.
        let mut help = Vec::new();
        let table = load(config.path()).unwrap();
        let (mut command, _) = apply(Cli::command(), &table, config.path()).unwrap();
        command.build();
        command
            .find_subcommand_mut("serve")
            .unwrap()
            .write_long_help(&mut help)
            .unwrap();
        let help = String::from_utf8(help).unwrap();
        assert!(help.contains("/var/lib/sidecar/s.db"), "{help}");
        assert!(
            !help.contains("tok-file-secret") && !help.contains("pw-file-secret"),
            "{help}"
        );
    }

    #[test]
    fn check_config_refuses_an_invalid_configuration() {
        let config = file("country-code = \"+49\"\n");
        let parsed = parse_with(Some(config.path()), &["serve", "--check-config"]).unwrap();
        assert!(
            check_config(&parsed)
                .unwrap_err()
                .contains("--country-code")
        );
        let parsed = parse_with(
            None,
            &[
                "serve",
                "--check-config",
                "--tls-cert",
                "/nonexistent/c.pem",
                "--tls-key",
                "/nonexistent/k.pem",
            ],
        )
        .unwrap();
        let error = check_config(&parsed).unwrap_err();
        assert!(error.contains("--tls-cert /nonexistent/c.pem"), "{error}");
    }

    #[test]
    fn check_config_refuses_what_serve_refuses_and_bounds_every_size() {
        let junk = file("not a certificate\n");
        let junk = junk.path().to_str().unwrap();
        let refused = |args: &[&str]| {
            let mut all = vec!["serve", "--check-config"];
            all.extend_from_slice(args);
            let parsed = parse_with(None, &all).unwrap();
            let error = check_config(&parsed).unwrap_err();
            let Command::Serve(serve) = &parsed.cli.command else {
                unreachable!("a serve command line")
            };
            // `serve` refuses it with the same words, before any port or file.
            let serve_error = match serve.as_ref().clone().into_config() {
                Ok(config) => format!("{:#}", crate::preflight(&config).unwrap_err()),
                Err(error) => error,
            };
            assert_eq!(error, serve_error);
            error
        };
        let e = refused(&["--tls-cert", junk, "--tls-key", junk]);
        assert!(e.contains("--tls-cert"), "{e}");
        let e = refused(&["--live-buffer", "1000000000000"]);
        assert!(
            e.contains("--live-buffer must be between 1 and 1000000"),
            "{e}"
        );
        let e = refused(&["--max-connections", "99999999999999"]);
        assert!(e.contains("--max-connections must be between"), "{e}");
        let e = refused(&["--header-timeout-secs", "18446744073709551615"]);
        assert!(e.contains("--header-timeout-secs must be between"), "{e}");
        let e = refused(&["--retention-days", "18446744073709551615"]);
        assert!(e.contains("--retention-days must be at most"), "{e}");
        let e = refused(&["--signature-key", junk]);
        assert!(e.contains("--signature-key"), "{e}");
    }

    #[test]
    fn the_config_flag_is_found_before_the_parse() {
        let args = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            config_path(&args(&["x", "serve", "--config", "a.toml"])),
            Some("a.toml".into())
        );
        assert_eq!(
            config_path(&args(&["x", "--config=b.toml", "serve"])),
            Some("b.toml".into())
        );
        assert_eq!(
            config_path(&args(&["x", "serve", "--", "--config", "c"])),
            None
        );
        assert_eq!(config_path(&args(&["x", "serve"])), None);
    }
}
