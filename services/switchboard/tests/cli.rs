//! The command line and the settings check of the `switchboard` binary, run
//! as a process: `--help` and `--version` answer and exit, anything else on
//! the command line and any unknown setting stop it before it starts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

fn switchboard(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    command.args(args).env("RUST_BACKTRACE", "0");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("the switchboard binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn version_and_help_answer_and_exit() {
    let version = switchboard(&["--version"], &[]);
    assert!(version.status.success());
    assert_eq!(
        text(&version.stdout),
        format!("switchboard {}\n", env!("CARGO_PKG_VERSION"))
    );
    let help = switchboard(&["--help"], &[]);
    assert!(help.status.success());
    let help = text(&help.stdout);
    assert!(help.contains("Usage: switchboard"), "{help}");
    assert!(help.contains("SWITCHBOARD_CONFIG"), "{help}");
}

#[test]
fn an_unknown_argument_is_a_usage_error() {
    let out = switchboard(&["--listen", "0.0.0.0:1"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("unexpected argument '--listen'"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_misspelt_setting_stops_the_start_naming_the_nearest_key() {
    let out = switchboard(&[], &[("SWITCHBOARD_HTTP__LISTN", "127.0.0.1:0")]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            "unknown setting SWITCHBOARD_HTTP__LISTN; did you mean SWITCHBOARD_HTTP__LISTEN?"
        ),
        "{stderr}"
    );
}

#[test]
fn a_misspelt_key_in_the_settings_file_stops_the_start() {
    let dir = std::env::temp_dir().join(format!("switchboard-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("settings.toml");
    std::fs::write(&file, "[worker]\nprefetsh = 8\n").unwrap();
    let out = switchboard(&[], &[("SWITCHBOARD_CONFIG", file.to_str().unwrap())]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("unknown setting worker.prefetsh in ")
            && stderr.contains("did you mean worker.prefetch?"),
        "{stderr}"
    );
}
