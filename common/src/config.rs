//! Layered configuration: defaults → TOML file → `MC_*` environment → flags, then the
//! caller's `validate()`. Errors name the key and where its value came from.

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    MissingFile(String),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl ConfigError {
    /// Each error as `<where>: <key>: <what>`, where is the file (or variable) it came from.
    fn from_figment(e: figment::Error, file: Option<&Path>) -> ConfigError {
        let msgs: Vec<String> = e
            .into_iter()
            .map(|e| {
                let origin = match e.metadata.as_ref().and_then(|m| m.source.as_ref()) {
                    Some(figment::Source::File(p)) => Some(p.display().to_string()),
                    Some(other) => Some(other.to_string()),
                    None => e
                        .metadata
                        .as_ref()
                        .map(|m| m.name.to_string())
                        .or_else(|| file.map(|f| f.display().to_string())),
                };
                // Figment files keys under its profile ("default"); users never write it.
                let key: Vec<&str> = e
                    .path
                    .iter()
                    .map(String::as_str)
                    .skip_while(|k| *k == "default")
                    .collect();
                let mut m = String::new();
                if let Some(o) = origin {
                    m.push_str(&o);
                    m.push_str(": ");
                }
                if !key.is_empty() {
                    m.push_str(&key.join("."));
                    m.push_str(": ");
                }
                m.push_str(&e.kind.to_string());
                m
            })
            .collect();
        ConfigError::Invalid(msgs.join("; "))
    }
}

/// Loads `T`. `file` is read if given (and must exist when `required`); environment
/// variables `MC_<KEY>` (nested keys joined by `__`) come next; `flags` (only the fields
/// set) win last.
pub fn load<T, F>(file: Option<&Path>, required: bool, flags: &F) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default,
    F: Serialize,
{
    // Only variables naming a key of `T` are read, so an `MC_*` variable meant for another
    // program does not trip `deny_unknown_fields`.
    let known: Vec<String> = match serde_json::to_value(T::default()) {
        Ok(serde_json::Value::Object(m)) => m.keys().cloned().collect(),
        _ => Vec::new(),
    };
    let env = Env::prefixed("MC_").split("__").filter(move |k| {
        let top = k.as_str().split('.').next().unwrap_or("");
        known.iter().any(|n| n.eq_ignore_ascii_case(top))
    });
    load_with_env(file, required, flags, env)
}

/// What a service binary does with its configuration: loads it from `file` (or, if none was
/// given, from `default_file` when that exists), the environment and `flags`, validates it,
/// and with `check` prints that it is valid and returns None (the binary then exits 0).
pub fn for_service<T, F>(
    file: Option<&Path>,
    default_file: &str,
    flags: &F,
    check: bool,
    validate: impl FnOnce(&T) -> Result<(), String>,
) -> Result<Option<T>, ConfigError>
where
    T: DeserializeOwned + Serialize + Default,
    F: Serialize,
{
    let (path, required) = match file {
        Some(p) => (p, true),
        None => (Path::new(default_file), false),
    };
    let cfg: T = load(Some(path), required, flags)?;
    validate(&cfg).map_err(ConfigError::Invalid)?;
    if check {
        println!("{}: the configuration is valid", path.display());
        return Ok(None);
    }
    Ok(Some(cfg))
}

/// As `load`, with an explicit environment provider (tests pass `Env::raw().only(&[])`).
pub fn load_with_env<T, F>(
    file: Option<&Path>,
    required: bool,
    flags: &F,
    env: Env,
) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default,
    F: Serialize,
{
    let mut fig = Figment::from(Serialized::defaults(T::default()));
    if let Some(path) = file {
        if path.exists() {
            fig = fig.merge(Toml::file_exact(path));
        } else if required {
            return Err(ConfigError::MissingFile(path.display().to_string()));
        }
    }
    fig = fig.merge(env).merge(Serialized::defaults(flags));
    fig.extract()
        .map_err(|e| ConfigError::from_figment(e, file))
}

/// Reads a secret kept in a file of its own (a token, a signing secret): one word,
/// surrounding whitespace ignored. Errors name the setting and the file, never the content.
pub fn read_secret_file(path: &Path, setting: &str) -> Result<String, String> {
    let s = std::fs::read_to_string(path)
        .map_err(|e| format!("{setting} {}: {e}", path.display()))?
        .trim()
        .to_string();
    if s.is_empty() || s.contains(char::is_whitespace) {
        return Err(format!(
            "{setting} {}: empty or not one token",
            path.display()
        ));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Serialize, serde::Deserialize, PartialEq)]
    struct Cfg {
        listen: String,
        slots: u32,
        nested: Nested,
    }
    #[derive(Debug, Default, Serialize, serde::Deserialize, PartialEq)]
    struct Nested {
        name: String,
    }
    #[derive(Serialize, Default)]
    struct Flags {
        #[serde(skip_serializing_if = "Option::is_none")]
        slots: Option<u32>,
    }

    #[test]
    fn layers_in_order_and_names_bad_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "listen = \"a:1\"\nslots = 3\n[nested]\nname = \"x\"\n",
        )
        .unwrap();
        let none = || Env::raw().only(&["__NOTHING__"]);
        let c: Cfg = load_with_env(Some(&path), true, &Flags::default(), none()).unwrap();
        assert_eq!(c.slots, 3);
        assert_eq!(c.nested.name, "x");
        let c: Cfg = load_with_env(Some(&path), true, &Flags { slots: Some(9) }, none()).unwrap();
        assert_eq!(c.slots, 9);

        std::fs::write(&path, "slots = \"many\"\n").unwrap();
        let err =
            load_with_env::<Cfg, _>(Some(&path), true, &Flags::default(), none()).unwrap_err();
        assert!(err.to_string().contains("slots"), "{err}");

        std::fs::write(&path, "slots = [\n").unwrap();
        let err =
            load_with_env::<Cfg, _>(Some(&path), true, &Flags::default(), none()).unwrap_err();
        assert!(err.to_string().contains("c.toml"), "{err}");

        let missing = dir.path().join("nope.toml");
        assert!(matches!(
            load_with_env::<Cfg, _>(Some(&missing), true, &Flags::default(), none()),
            Err(ConfigError::MissingFile(_))
        ));
    }
}
