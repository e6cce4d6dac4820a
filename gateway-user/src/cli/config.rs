//! Settings of `tollgate run` from three places: the command line, the environment, and a YAML
//! file (`--config FILE` or `TOLLGATE_CONFIG`). A flag wins over its environment variable, which
//! wins over the file, which wins over the default.
//!
//! The file's keys are the long flag names (`interface`, `source`, `git-password-file`, ...), its
//! values what the flag takes: a string or number, a list for a flag that may repeat, `true` or
//! `false` for a switch. Before anything starts, every setting from every place is checked on its
//! own with the same parser the flag uses, and every bad one is reported at once, each naming
//! where it came from (`--interval`, `$TOLLGATE_ADMIN`, `/etc/tollgate.yaml: interval`).
//!
//! The merge works on the command line itself: the file's settings that no flag or variable
//! gives are added as flags, so clap parses one command line whatever the source, and a flag
//! added to `RunArgs` is a file key with no code here.
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, Command, CommandFactory};
use serde_json::Value;

/// Environment variable naming the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "TOLLGATE_CONFIG";

/// Largest config file read, in bytes.
const MAX_CONFIG_SIZE: u64 = 1024 * 1024;

/// One value of a setting and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Setting {
    /// The flag's long name.
    long: String,
    /// Its values: one for most flags, several for a repeated one, none for a switch.
    values: Vec<String>,
    /// For a switch from the file: its value.
    switch: Option<bool>,
    /// `--name`, `$VAR` or `FILE: name`.
    origin: String,
}

/// The command line of the program with the config file merged in, or every problem found.
///
/// `argv` is the whole command line (program name first). Anything but `run` is returned as is:
/// only `run` reads a config file.
pub fn expand(argv: Vec<OsString>) -> Result<Vec<OsString>, Vec<String>> {
    let root = super::Cli::command();
    let Some(run_at) = subcommand_position(&root, &argv) else {
        return Ok(argv);
    };
    if argv[run_at] != "run" {
        return Ok(argv);
    }
    let Some(run) = root.find_subcommand("run").cloned() else {
        return Ok(argv);
    };
    let globals: Vec<Arg> = root
        .get_arguments()
        .filter(|a| a.is_global_set())
        .cloned()
        .collect();
    let args: Vec<Arg> = run.get_arguments().cloned().chain(globals).collect();
    let mut errors = Vec::new();

    // 1. The command line (global flags before `run` included).
    let mut tokens: Vec<&OsString> = argv[1..run_at].iter().collect();
    tokens.extend(argv[run_at + 1..].iter());
    let given = command_line_settings(&args, &tokens, &mut errors);

    // 2. The environment, for the flags that have a variable and were not given.
    let env: Vec<Setting> = args
        .iter()
        .filter(|a| !given.iter().any(|s| Some(s.long.as_str()) == a.get_long()))
        .filter_map(|a| {
            let var = a.get_env()?;
            let value = std::env::var_os(var)?;
            Some(Setting {
                long: a.get_long()?.to_owned(),
                values: vec![value.to_string_lossy().into_owned()],
                switch: None,
                origin: format!("${}", var.to_string_lossy()),
            })
        })
        .collect();

    // 3. The file.
    let config_path = given
        .iter()
        .chain(&env)
        .find(|s| s.long == "config")
        .and_then(|s| s.values.first().map(PathBuf::from));
    let from_file = match &config_path {
        Some(path) => file_settings(path, &args, &mut errors),
        None => Vec::new(),
    };

    // Every value, checked on its own.
    for setting in given.iter().chain(&env).chain(&from_file) {
        if let Err(e) = check(&args, setting) {
            errors.push(e);
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }

    // The file's settings that no flag or variable gives become flags.
    let mut merged = argv;
    for s in from_file {
        if given.iter().chain(&env).any(|g| g.long == s.long) {
            continue;
        }
        match s.switch {
            Some(true) => merged.push(format!("--{}", s.long).into()),
            Some(false) => {}
            None => {
                for v in s.values {
                    merged.push(format!("--{}={v}", s.long).into());
                }
            }
        }
    }
    Ok(merged)
}

/// Index of the subcommand in `argv` (skipping the global flags before it).
fn subcommand_position(root: &Command, argv: &[OsString]) -> Option<usize> {
    let mut i = 1;
    while i < argv.len() {
        let t = argv[i].to_string_lossy();
        if !t.starts_with('-') {
            return Some(i);
        }
        // A global flag that takes its value in the next token.
        let takes_next = !t.contains('=')
            && root
                .get_arguments()
                .find(|a| a.get_long().map(|l| format!("--{l}")) == Some(t.to_string()))
                .is_some_and(|a| a.get_action().takes_values());
        i += if takes_next { 2 } else { 1 };
    }
    None
}

/// The settings given as flags. Unknown flags are left to clap (which names them and suggests
/// the closest one).
fn command_line_settings(
    args: &[Arg],
    tokens: &[&OsString],
    errors: &mut Vec<String>,
) -> Vec<Setting> {
    let mut out: Vec<Setting> = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let token = tokens[i].to_string_lossy().into_owned();
        i += 1;
        if token == "--" {
            break;
        }
        let Some(flag) = token.strip_prefix("--") else {
            continue;
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (flag, None),
        };
        let Some(arg) = args.iter().find(|a| a.get_long() == Some(name)) else {
            continue;
        };
        let value = if arg.get_action().takes_values() {
            match inline {
                Some(v) => Some(v),
                None if i < tokens.len() => {
                    i += 1;
                    Some(tokens[i - 1].to_string_lossy().into_owned())
                }
                None => {
                    errors.push(format!("--{name}: a value is required"));
                    continue;
                }
            }
        } else {
            None
        };
        let origin = format!("--{name}");
        match out.iter_mut().find(|s| s.long == name) {
            // Repeated: a list flag collects, any other flag keeps the last value (as clap's
            // `overrides_with` does).
            Some(s) => match (value, matches!(arg.get_action(), ArgAction::Append)) {
                (Some(v), true) => s.values.push(v),
                (Some(v), false) => s.values = vec![v],
                (None, _) => {}
            },
            None => out.push(Setting {
                long: name.to_owned(),
                values: value.into_iter().collect(),
                switch: None,
                origin,
            }),
        }
    }
    out
}

/// The settings of the config file; problems of the file itself go to `errors`.
fn file_settings(path: &Path, args: &[Arg], errors: &mut Vec<String>) -> Vec<Setting> {
    let shown = path.display().to_string();
    let text = match std::fs::metadata(path) {
        Ok(m) if m.len() > MAX_CONFIG_SIZE => {
            errors.push(format!(
                "{shown}: {} bytes; a config file may have {MAX_CONFIG_SIZE}",
                m.len()
            ));
            return Vec::new();
        }
        Ok(_) => match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                errors.push(format!("{shown}: cannot read the config file: {e}"));
                return Vec::new();
            }
        },
        Err(e) => {
            errors.push(format!("{shown}: cannot read the config file: {e}"));
            return Vec::new();
        }
    };
    let map: serde_json::Map<String, Value> = if text.trim().is_empty() {
        serde_json::Map::new()
    } else {
        match serde_saphyr::from_str::<Value>(&text) {
            Ok(Value::Object(m)) => m,
            Ok(Value::Null) => serde_json::Map::new(),
            Ok(_) => {
                errors.push(format!(
                    "{shown}: the config file must be a mapping of settings (key: value)"
                ));
                return Vec::new();
            }
            Err(e) => {
                errors.push(format!("{shown}: not valid YAML: {e}"));
                return Vec::new();
            }
        }
    };
    let mut out = Vec::new();
    for (key, value) in map {
        let origin = format!("{shown}: {key}");
        let Some(arg) = args.iter().find(|a| a.get_long() == Some(key.as_str())) else {
            let known: Vec<&str> = args
                .iter()
                .filter_map(|a| a.get_long())
                .filter(|l| *l != "config" && *l != "help")
                .collect();
            errors.push(format!(
                "{origin}: unknown setting (the keys are the long flag names of `tollgate run`: {})",
                known.join(", ")
            ));
            continue;
        };
        if key == "config" {
            errors.push(format!(
                "{origin}: a config file cannot name another config file"
            ));
            continue;
        }
        let repeats = matches!(arg.get_action(), ArgAction::Append);
        let scalar = |v: &Value| -> Option<String> {
            match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                Value::Bool(b) => Some(b.to_string()),
                _ => None,
            }
        };
        if !arg.get_action().takes_values() {
            match value {
                Value::Bool(b) => out.push(Setting {
                    long: key,
                    values: vec![],
                    switch: Some(b),
                    origin,
                }),
                other => errors.push(format!(
                    "{origin}: a switch takes true or false, not {other}"
                )),
            }
            continue;
        }
        let values = match &value {
            Value::Array(items) if repeats => {
                let v: Option<Vec<String>> = items.iter().map(scalar).collect();
                match v {
                    Some(v) if !v.is_empty() => v,
                    Some(_) => {
                        errors.push(format!("{origin}: an empty list"));
                        continue;
                    }
                    None => {
                        errors.push(format!("{origin}: every item must be a string or number"));
                        continue;
                    }
                }
            }
            Value::Array(_) => {
                errors.push(format!("{origin}: takes one value, not a list"));
                continue;
            }
            v => match scalar(v) {
                Some(s) => vec![s],
                None => {
                    errors.push(format!("{origin}: takes a string or number, not {v}"));
                    continue;
                }
            },
        };
        out.push(Setting {
            long: key,
            values,
            switch: None,
            origin,
        });
    }
    out
}

/// Checks one setting with the parser of its flag (no other flag, no environment).
fn check(args: &[Arg], setting: &Setting) -> Result<(), String> {
    if setting.values.is_empty() {
        return Ok(());
    }
    if !args
        .iter()
        .any(|a| a.get_long() == Some(setting.long.as_str()))
    {
        return Ok(());
    }
    // Every flag of `run` is in the probe (relations between flags name each other), none
    // required and none read from the environment: only this setting is parsed.
    let probe = Command::new("probe")
        .no_binary_name(true)
        .disable_help_flag(true)
        .disable_version_flag(true)
        .args(
            args.iter()
                .filter(|a| a.get_long() != Some("help"))
                .map(|a| a.clone().required(false).env(None::<&str>).global(false)),
        );
    let argv = setting
        .values
        .iter()
        .map(|v| format!("--{}={v}", setting.long));
    match probe.try_get_matches_from(argv) {
        Ok(_) => Ok(()),
        // Relations between flags are for the whole command line, checked when it is parsed.
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::ArgumentConflict
                    | clap::error::ErrorKind::MissingRequiredArgument
            ) =>
        {
            Ok(())
        }
        Err(e) => Err({
            // clap's first line is "error: invalid value 'x' for '--flag <X>': reason".
            let text = e.to_string();
            let line = text.lines().next().unwrap_or("invalid value").trim();
            let line = line.strip_prefix("error: ").unwrap_or(line);
            format!("{}: {line}", setting.origin)
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &[&str]) -> Vec<OsString> {
        std::iter::once("tollgate")
            .chain(s.iter().copied())
            .map(OsString::from)
            .collect()
    }

    fn strings(v: Vec<OsString>) -> Vec<String> {
        v.into_iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect()
    }

    fn config(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn other_commands_and_runs_without_a_file_pass_through() {
        let a = argv(&["validate", "x"]);
        assert_eq!(expand(a.clone()).unwrap(), a);
        let a = argv(&["run", "--interface", "eth0", "--source", "/p"]);
        assert_eq!(expand(a.clone()).unwrap(), a);
    }

    #[test]
    fn the_file_fills_what_the_flags_do_not_give() {
        let f = config(
            "interface: [eth0, eth1]\nsource: /srv/policy\ninterval: 10s\ndetach-on-exit: true\nallow-ref-rewind: false\nlog-format: json\n",
        );
        let path = f.path().to_string_lossy().into_owned();
        let out = strings(expand(argv(&["run", "--config", &path, "--interval", "5s"])).unwrap());
        assert!(out.contains(&"--interface=eth0".to_owned()), "{out:?}");
        assert!(out.contains(&"--interface=eth1".to_owned()), "{out:?}");
        assert!(out.contains(&"--source=/srv/policy".to_owned()), "{out:?}");
        assert!(out.contains(&"--detach-on-exit".to_owned()), "{out:?}");
        assert!(out.contains(&"--log-format=json".to_owned()), "{out:?}");
        assert!(
            !out.iter().any(|a| a.contains("allow-ref-rewind")),
            "{out:?}"
        );
        // The flag wins: the file's interval is not added.
        assert!(!out.contains(&"--interval=10s".to_owned()), "{out:?}");
        // And clap reads the result.
        let cli = <super::super::Cli as clap::Parser>::try_parse_from(&out).unwrap();
        let super::super::Command::Run(args) = cli.command else {
            panic!("not run")
        };
        assert_eq!(args.interfaces, vec!["eth0", "eth1"]);
        assert_eq!(args.interval, std::time::Duration::from_secs(5));
        assert!(args.detach_on_exit);
    }

    #[test]
    fn a_flag_list_replaces_the_file_list() {
        let f = config("interface: [eth0, eth1]\nsource: /p\n");
        let path = f.path().to_string_lossy().into_owned();
        let out = strings(expand(argv(&["run", "--config", &path, "--interface", "wg0"])).unwrap());
        assert!(!out.iter().any(|a| a.contains("eth")), "{out:?}");
    }

    #[test]
    fn every_bad_setting_is_reported_at_once_with_its_origin() {
        let f = config(
            "interval: fast\nadmin: not-an-address\nattach-mode: sideways\nintreface: [eth0]\ndetach-on-exit: yes please\nsource: [a, b]\n",
        );
        let path = f.path().to_string_lossy().into_owned();
        let errors = expand(argv(&[
            "run",
            "--config",
            &path,
            "--interval",
            "3d",
            "--interface",
            "eth0",
        ]))
        .unwrap_err();
        let all = errors.join("\n");
        for needle in [
            "--interval: invalid value '3d'",
            &format!("{path}: interval: invalid value 'fast'"),
            &format!("{path}: admin: invalid value 'not-an-address'"),
            &format!("{path}: attach-mode: invalid value 'sideways'"),
            &format!("{path}: intreface: unknown setting"),
            &format!("{path}: detach-on-exit: a switch takes true or false"),
            &format!("{path}: source: takes one value, not a list"),
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
        assert_eq!(errors.len(), 7, "{all}");
    }

    #[test]
    fn a_missing_or_broken_file_is_an_error() {
        let errors = expand(argv(&["run", "--config", "/nonexistent/tollgate.yaml"])).unwrap_err();
        assert!(
            errors[0].contains("/nonexistent/tollgate.yaml: cannot read the config file"),
            "{errors:?}"
        );
        let f = config("interface: [eth0\n");
        let path = f.path().to_string_lossy().into_owned();
        let errors = expand(argv(&["run", "--config", &path])).unwrap_err();
        assert!(errors[0].contains("not valid YAML"), "{errors:?}");
        let f = config("- eth0\n");
        let path = f.path().to_string_lossy().into_owned();
        let errors = expand(argv(&["run", "--config", &path])).unwrap_err();
        assert!(errors[0].contains("must be a mapping"), "{errors:?}");
    }

    #[test]
    fn every_flag_of_run_can_be_checked_on_its_own() {
        // The probe holds every flag, so relations between flags (conflicts, requirements)
        // resolve; a value that parses is accepted whatever the other flags are.
        let root = super::super::Cli::command();
        let run = root.find_subcommand("run").unwrap();
        let args: Vec<Arg> = run.get_arguments().cloned().collect();
        for a in &args {
            let Some(long) = a.get_long() else { continue };
            if !a.get_action().takes_values() {
                continue;
            }
            let setting = Setting {
                long: long.to_owned(),
                values: vec!["\u{1}not a value of anything".to_owned()],
                switch: None,
                origin: format!("--{long}"),
            };
            // Must not panic; a string flag accepts it, a typed one names the flag.
            if let Err(e) = check(&args, &setting) {
                assert!(e.starts_with(&format!("--{long}: ")), "{e}");
            }
        }
    }

    #[test]
    fn global_flags_before_run_are_checked_too() {
        let errors = expand(argv(&["--log-format", "xml", "run", "--interface", "e"])).unwrap_err();
        assert!(
            errors[0].starts_with("--log-format: invalid value 'xml'"),
            "{errors:?}"
        );
    }
}
