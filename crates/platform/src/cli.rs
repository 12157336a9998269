//! The command line every Switchboard binary shares: `--help` and
//! `--version`, and nothing else — settings come from files and the
//! environment ([`crate::settings`]), which the help text says. Anything
//! else on the command line is an error (exit code 2) instead of being
//! ignored while the service starts.

use clap::Command;

const SETTINGS: &str = "\
Settings, lowest precedence first:
  1. the built-in defaults (services/<service>/config/default.toml lists every key)
  2. the TOML file named by SWITCHBOARD_CONFIG
  3. AMQP_URL, for amqp.url (one broker, or the nodes of a cluster, comma-separated)
  4. SWITCHBOARD_<SECTION>__<KEY> variables, e.g. SWITCHBOARD_HTTP__LISTEN=0.0.0.0:5055
An unknown key is an error. The README's \"Configuration\" lists them all.";

/// Handles the command line of binary `name` (version `version`, what it is:
/// `about`): prints help or the version and exits when asked; exits with
/// a usage error on anything else.
pub fn parse(name: &'static str, version: &'static str, about: &'static str) {
    command(name, version, about).get_matches();
}

fn command(name: &'static str, version: &'static str, about: &'static str) -> Command {
    Command::new(name)
        .version(version)
        .about(about)
        .after_help(SETTINGS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<(), clap::Error> {
        command("gateway", "1.2.3", "One gateway.")
            .try_get_matches_from(std::iter::once("gateway").chain(args.iter().copied()))
            .map(|_| ())
    }

    #[test]
    fn help_and_version_are_answered_and_anything_else_refused() {
        assert!(run(&[]).is_ok());
        let help = run(&["--help"]).unwrap_err();
        assert_eq!(help.kind(), clap::error::ErrorKind::DisplayHelp);
        let text = help.to_string();
        assert!(
            text.contains("One gateway.") && text.contains("SWITCHBOARD_CONFIG"),
            "{text}"
        );
        let version = run(&["--version"]).unwrap_err();
        assert_eq!(version.kind(), clap::error::ErrorKind::DisplayVersion);
        assert_eq!(version.to_string(), "gateway 1.2.3\n");
        let wrong = run(&["--listen", "x"]).unwrap_err();
        assert_eq!(wrong.kind(), clap::error::ErrorKind::UnknownArgument);
        assert_eq!(wrong.exit_code(), 2);
    }
}
