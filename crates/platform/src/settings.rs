//! Layered settings with the `config` crate, lowest precedence first:
//!
//! 1. the service's built-in defaults (a TOML file compiled into the binary,
//!    which also documents every key);
//! 2. the TOML file named by `SWITCHBOARD_CONFIG`, if set;
//! 3. `AMQP_URL`, for `amqp.url` (the conventional variable);
//! 4. environment variables `SWITCHBOARD_<SECTION>__<KEY>`, e.g.
//!    `SWITCHBOARD_HTTP__LISTEN=0.0.0.0:8080`; a list-valued key takes a
//!    comma-separated value.
//!
//! A key that no Switchboard service knows, in the file or in a variable, is
//! an error naming the nearest known key (`unknown`).

mod unknown;

pub use config::ConfigError;
use config::{Config, Environment, File, FileFormat};
use serde::de::DeserializeOwned;

/// Environment variable naming an optional settings file.
pub const CONFIG_FILE_VAR: &str = "SWITCHBOARD_CONFIG";
/// Prefix of setting overrides in the environment.
pub const ENV_PREFIX: &str = "SWITCHBOARD";

/// Loads settings of type `T` from `defaults` (TOML) and the layers above.
/// `list_keys` are the keys (`section.key`) whose environment value is a
/// comma-separated list. A key that is neither in `defaults` nor in
/// `others` (the other services' defaults: one environment may configure
/// them all) is refused.
pub fn load<T: DeserializeOwned>(
    defaults: &str,
    others: &[&str],
    list_keys: &[&str],
) -> Result<T, ConfigError> {
    let known: Vec<&str> = std::iter::once(defaults)
        .chain(others.iter().copied())
        .collect();
    unknown::refuse_unknown(
        &known,
        |name| std::env::var(name).ok(),
        std::env::vars_os().filter_map(|(name, _)| name.into_string().ok()),
    )?;
    load_from(
        defaults,
        |name| std::env::var(name).ok(),
        environment(list_keys),
    )
}

/// The `SWITCHBOARD_*` variables. A list separator applies to the named keys
/// only: config-rs splits *every* value when it has a separator and no keys.
fn environment(list_keys: &[&str]) -> Environment {
    let mut environment = Environment::with_prefix(ENV_PREFIX);
    if !list_keys.is_empty() {
        environment = environment.list_separator(",");
        for key in list_keys {
            environment = environment.with_list_parse_key(key);
        }
    }
    environment
}

/// [`load`] with the environment passed in, for tests.
fn load_from<T: DeserializeOwned>(
    defaults: &str,
    var: impl Fn(&str) -> Option<String>,
    environment: Environment,
) -> Result<T, ConfigError> {
    let mut builder = Config::builder().add_source(File::from_str(defaults, FileFormat::Toml));
    if let Some(path) = var(CONFIG_FILE_VAR) {
        builder = builder.add_source(File::new(&path, FileFormat::Toml).required(true));
    }
    if let Some(url) = var("AMQP_URL") {
        // A source of its own, so it sits above the files and below the
        // prefixed variables.
        builder = builder.add_source(Config::builder().set_override("amqp.url", url)?.build()?);
    }
    builder
        .add_source(
            environment
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true),
        )
        .build()?
        .try_deserialize()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::HashMap;

    #[derive(Debug, Deserialize)]
    struct Sample {
        amqp: Amqp,
        http: Http,
    }
    #[derive(Debug, Deserialize)]
    struct Amqp {
        url: String,
    }
    #[derive(Debug, Deserialize)]
    struct Http {
        listen: String,
        max: u32,
        origins: Vec<String>,
    }

    const DEFAULTS: &str = r#"
        [amqp]
        url = "amqp://default"
        [http]
        listen = "127.0.0.1:1"
        max = 7
        origins = ["a"]
    "#;

    fn load_listing(list_keys: &[&str], vars: &[(&str, &str)]) -> Sample {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let env = environment(list_keys).source(Some(vars.clone()));
        load_from(DEFAULTS, |name| vars.get(name).cloned(), env).unwrap()
    }

    fn load_with(vars: &[(&str, &str)]) -> Sample {
        load_listing(&["http.origins"], vars)
    }

    #[test]
    fn list_keys_split_on_commas_and_other_keys_stay_strings() {
        let s = load_with(&[
            ("SWITCHBOARD_HTTP__ORIGINS", "http://a,http://b"),
            ("SWITCHBOARD_HTTP__LISTEN", ""),
        ]);
        assert_eq!(s.http.origins, ["http://a", "http://b"]);
        assert_eq!(s.http.listen, "");
        // Without list keys, an empty value is still an empty string.
        let s = load_listing(&[], &[("SWITCHBOARD_HTTP__LISTEN", "")]);
        assert_eq!(s.http.listen, "");
        assert_eq!(s.http.origins, ["a"]);
    }

    #[test]
    fn defaults_apply_without_environment() {
        let s = load_with(&[]);
        assert_eq!(s.amqp.url, "amqp://default");
        assert_eq!(s.http.listen, "127.0.0.1:1");
        assert_eq!(s.http.max, 7);
    }

    #[test]
    fn amqp_url_overrides_the_default_and_prefixed_vars_override_it() {
        assert_eq!(load_with(&[("AMQP_URL", "amqp://a")]).amqp.url, "amqp://a");
        let s = load_with(&[
            ("AMQP_URL", "amqp://a"),
            ("SWITCHBOARD_AMQP__URL", "amqp://b"),
            ("SWITCHBOARD_HTTP__MAX", "9"),
        ]);
        assert_eq!(s.amqp.url, "amqp://b");
        assert_eq!(s.http.max, 9);
    }
}
