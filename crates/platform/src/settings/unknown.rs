//! Settings nobody reads are refused at start-up: a misspelt key in the file
//! named by `SWITCHBOARD_CONFIG` or in a `SWITCHBOARD_<SECTION>__<KEY>`
//! variable would otherwise be ignored without a word, and the service would
//! run on a default its operator believes is overridden.

use config::{ConfigError, File, FileFormat, Source, Value, ValueKind};
use std::collections::BTreeSet;

use super::{CONFIG_FILE_VAR, ENV_PREFIX};

/// How far (in edits) a name may be from a known one to be taken for a
/// misspelling of it.
const NEAR: usize = 3;

/// The dotted keys (`http.listen`) of TOML `sources`.
fn keys_of(sources: &[&str]) -> Result<BTreeSet<String>, ConfigError> {
    let mut keys = BTreeSet::new();
    for source in sources {
        let table = File::from_str(source, FileFormat::Toml).collect()?;
        for (name, value) in table {
            flatten(&name, value, &mut keys);
        }
    }
    Ok(keys)
}

fn flatten(prefix: &str, value: Value, keys: &mut BTreeSet<String>) {
    match value.kind {
        ValueKind::Table(table) => {
            for (name, value) in table {
                flatten(&format!("{prefix}.{name}"), value, keys);
            }
        }
        _ => {
            keys.insert(prefix.to_owned());
        }
    }
}

/// `http.listen` as a variable: `SWITCHBOARD_HTTP__LISTEN`.
fn variable(key: &str) -> String {
    format!("{ENV_PREFIX}_{}", key.replace('.', "__").to_uppercase())
}

/// The known name nearest to `name`, if near enough.
fn nearest<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    known
        .map(|k| (strsim::levenshtein(name, k), k))
        .filter(|(distance, _)| *distance <= NEAR)
        .min()
        .map(|(_, k)| k)
}

fn refused(what: &str, suggestion: Option<&str>) -> ConfigError {
    ConfigError::Message(match suggestion {
        Some(near) => format!("unknown setting {what}; did you mean {near}?"),
        None => format!("unknown setting {what} (README, \"Configuration\", lists every key)"),
    })
}

/// Refuses any setting that is not a key of `known` (the defaults of every
/// Switchboard service: one environment — a compose file, a Kubernetes
/// ConfigMap — may hold keys of both). `var` reads one variable, `vars`
/// lists them all. A `SWITCHBOARD_…` variable without `__` is not a setting
/// (compose's own `SWITCHBOARD_JWT_SECRET`, say) unless it is a near miss
/// of one.
pub(super) fn refuse_unknown(
    known: &[&str],
    var: impl Fn(&str) -> Option<String>,
    vars: impl Iterator<Item = String>,
) -> Result<(), ConfigError> {
    let keys = keys_of(known)?;
    let variables: BTreeSet<String> = keys.iter().map(|k| variable(k)).collect();
    let prefix = format!("{ENV_PREFIX}_");
    for name in vars {
        if !name.starts_with(&prefix) || name == CONFIG_FILE_VAR || variables.contains(&name) {
            continue;
        }
        let near = nearest(&name, variables.iter().map(String::as_str));
        if name.contains("__") || near.is_some() {
            return Err(refused(&name, near));
        }
    }
    if let Some(path) = var(CONFIG_FILE_VAR) {
        let file = std::fs::read_to_string(&path)
            .map_err(|e| ConfigError::Message(format!("cannot read {path}: {e}")))?;
        for key in keys_of(&[&file])? {
            if !keys.contains(&key) {
                let near = nearest(&key, keys.iter().map(String::as_str));
                return Err(refused(&format!("{key} in {path}"), near));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const GATEWAY: &str = "[http]\nlisten = \"x\"\nallowed_origins = []\n[amqp]\nurl = \"u\"\n";
    const RESPONDER: &str = "[worker]\nprefetch = 0\n[amqp]\nurl = \"u\"\n";

    fn check(vars: &[(&str, &str)]) -> Result<(), String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        refuse_unknown(
            &[GATEWAY, RESPONDER],
            |name| vars.get(name).cloned(),
            vars.keys().cloned(),
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn known_variables_of_either_service_pass() {
        check(&[
            ("SWITCHBOARD_HTTP__LISTEN", "a"),
            ("SWITCHBOARD_WORKER__PREFETCH", "8"),
            ("SWITCHBOARD_HTTP__ALLOWED_ORIGINS", "a,b"),
            ("PATH", "/bin"),
        ])
        .unwrap();
    }

    #[test]
    fn a_misspelt_variable_is_refused_with_the_nearest_name() {
        let error = check(&[("SWITCHBOARD_HTTP__LISTN", "a")]).unwrap_err();
        assert_eq!(
            error,
            "unknown setting SWITCHBOARD_HTTP__LISTN; did you mean SWITCHBOARD_HTTP__LISTEN?"
        );
        let error = check(&[("SWITCHBOARD_NOPE__NOTHING_LIKE_IT", "a")]).unwrap_err();
        assert!(error.starts_with("unknown setting SWITCHBOARD_NOPE__NOTHING_LIKE_IT ("));
    }

    #[test]
    fn a_single_underscore_is_refused_only_when_it_looks_like_a_setting() {
        let error = check(&[("SWITCHBOARD_HTTP_LISTEN", "a")]).unwrap_err();
        assert!(
            error.ends_with("did you mean SWITCHBOARD_HTTP__LISTEN?"),
            "{error}"
        );
        check(&[("SWITCHBOARD_JWT_SECRET", "s")]).unwrap();
    }

    #[test]
    fn unknown_keys_in_the_file_are_refused() {
        let dir = std::env::temp_dir().join(format!("sb-unknown-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.toml");
        std::fs::write(&path, "[http]\nlistn = \"x\"\n").unwrap();
        let path = path.to_str().unwrap();
        let error = check(&[(CONFIG_FILE_VAR, path)]).unwrap_err();
        assert_eq!(
            error,
            format!("unknown setting http.listn in {path}; did you mean http.listen?")
        );
        std::fs::write(dir.join("good.toml"), "[worker]\nprefetch = 3\n").unwrap();
        let good = dir.join("good.toml");
        check(&[(CONFIG_FILE_VAR, good.to_str().unwrap())]).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
