//! Loading: built-in defaults, the TOML file, the `TALLYD_…` environment, then the flags,
//! merged with the `config` crate and checked; a bad value is reported with where it came from.

use config::{Config, Environment, File, FileFormat};
use std::path::{Path, PathBuf};

use super::{Cli, ConfigError, Settings};
use crate::webconfig::WebConfig;

/// Environment variables: `TALLYD_<SECTION>__<FIELD>`, e.g. `TALLYD_STATSD__LISTEN_UDP`.
///
/// Only variables of that shape are read. Others that merely start with `TALLYD_`, such as
/// the `TALLYD_PORT` and `TALLYD_SERVICE_HOST` Kubernetes injects for a Service named
/// `tallyd`, are not settings and must not fail start-up.
pub(super) fn environment(vars: impl Iterator<Item = (String, String)>) -> Environment {
    let settings = vars
        .filter(|(key, _)| {
            key.strip_prefix("TALLYD_")
                .is_some_and(|rest| rest.contains("__"))
        })
        .collect();
    Environment::with_prefix("TALLYD")
        .prefix_separator("_")
        .separator("__")
        .list_separator(",")
        .with_list_parse_key("observer.buckets")
        .with_list_parse_key("remote_write.headers")
        .with_list_parse_key("remote_write.labels")
        .try_parsing(true)
        .source(Some(settings))
}

impl Settings {
    /// Loads defaults, the file named by `--config.file`, the environment, then the flags.
    pub fn load(cli: &Cli) -> Result<Settings, ConfigError> {
        Self::load_from(cli, environment(std::env::vars()))
    }

    pub(super) fn load_from(cli: &Cli, env: Environment) -> Result<Settings, ConfigError> {
        let file = cli
            .config_file
            .as_deref()
            .map(SettingsFile::read)
            .transpose()?;
        let env_keys: Vec<String> = config::Source::collect(&env)?.into_keys().collect();
        let mut builder = Config::builder();
        if let Some(file) = &file {
            builder = builder.add_source(File::from_str(&file.text, FileFormat::Toml));
        }
        builder = builder.add_source(env);
        let mut flags_given = Vec::new();
        for (key, flag, value) in cli.overrides() {
            if let Some(value) = value {
                builder = builder.set_override(key, value)?;
                flags_given.push((key, flag));
            }
        }
        for (key, flag, values) in cli.list_overrides() {
            if !values.is_empty() {
                builder = builder.set_override(key, values.to_vec())?;
                flags_given.push((key, flag.to_owned()));
            }
        }
        let settings: Settings =
            builder
                .build()?
                .try_deserialize()
                .map_err(|e| match mistyped(&e) {
                    Some((key, message)) => ConfigError::Invalid {
                        source_name: source_of(&flags_given, &env_keys, &key, file.as_ref()),
                        key,
                        message,
                    },
                    None => ConfigError::Merge(e),
                })?;
        settings
            .validate()
            .map_err(|(key, message)| ConfigError::Invalid {
                source_name: source_of(&flags_given, &env_keys, key, file.as_ref()),
                key: key.to_owned(),
                message,
            })?;
        // Read now, so a bad web config file fails start-up (and --check-config) like a bad
        // setting; the daemon reads it again when it starts the HTTP server.
        WebConfig::from_setting(&settings.web.config_file)?;
        Ok(settings)
    }
}

/// The settings file named by `--config.file`.
struct SettingsFile {
    path: PathBuf,
    text: String,
}

impl SettingsFile {
    /// Reads the file and checks it alone: the `config` crate loses line numbers, so a mistake
    /// in the file is reported from here, with its line, column and field.
    fn read(path: &Path) -> Result<SettingsFile, ConfigError> {
        let text = crate::files::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str::<Settings>(&text).map_err(|e| ConfigError::File {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        Ok(SettingsFile {
            path: path.to_owned(),
            text,
        })
    }
}

/// The key of a value the merged settings could not take (a duration without its unit, a word
/// for a number), and what is wrong with it, without the key the message would repeat.
fn mistyped(error: &config::ConfigError) -> Option<(String, String)> {
    match error {
        config::ConfigError::Type {
            unexpected,
            expected,
            key: Some(key),
            ..
        } => Some((
            key.clone(),
            format!("invalid type: {unexpected}, expected {expected}"),
        )),
        config::ConfigError::At {
            error,
            key: Some(key),
            ..
        } => Some((key.clone(), error.to_string())),
        _ => None,
    }
}

/// Names where the value of `key` came from, following the precedence flag > environment >
/// file > default: the flag, the variable, or the file and line.
fn source_of(
    flags_given: &[(&str, String)],
    env_keys: &[String],
    key: &str,
    file: Option<&SettingsFile>,
) -> String {
    if let Some((_, flag)) = flags_given.iter().rev().find(|(given, _)| *given == key) {
        return format!("flag {flag}");
    }
    if env_keys.iter().any(|k| k == key) {
        let var = format!("TALLYD_{}", key.replace('.', "__").to_uppercase());
        return format!("environment variable {var}");
    }
    let leaf = key.rsplit('.').next().unwrap_or(key);
    if let Some(file) = file {
        let line = file.text.lines().position(|l| {
            l.trim_start()
                .strip_prefix(leaf)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        });
        if let Some(line) = line {
            return format!("{}:{}", file.path.display(), line + 1);
        }
    }
    "the built-in defaults".into()
}
