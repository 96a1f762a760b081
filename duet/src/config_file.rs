//! The optional TOML config file. Its keys are the subcommand's long flag
//! names (`http-listen` or `http_listen`); unknown keys and bad values are
//! refused with one line naming the key. Values from the file are spliced
//! into the arguments unless the same option is given as a flag or by its
//! environment variable, so the precedence is flag > env > file > default.

use crate::cli::{Cli, CliError};
use clap::error::ContextKind;
use clap::{CommandFactory, FromArgMatches};
use std::collections::HashSet;
use std::ffi::OsString;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

pub fn parse_with_file(args: Vec<OsString>) -> Result<Cli, CliError> {
    let (config_path, sub_index) = scan(&args);
    let config_path = config_path.or_else(|| std::env::var_os("DUET_CONFIG").map(PathBuf::from));
    let (args, from_file) = match (config_path, sub_index) {
        (Some(path), Some(sub_index)) => {
            let sub = args[sub_index].to_string_lossy().into_owned();
            let extra = file_args(&path, &sub, &args[sub_index + 1..])?;
            let keys: HashSet<String> = extra.iter().map(|(k, _)| k.clone()).collect();
            let mut merged = args[..=sub_index].to_vec();
            merged.extend(extra.into_iter().map(|(_, a)| a));
            merged.extend(args[sub_index + 1..].iter().cloned());
            (merged, Some((path, keys)))
        }
        _ => (args, None),
    };
    let matches = Cli::command().args_override_self(true).try_get_matches_from(args);
    let matches = match matches {
        Ok(m) => m,
        Err(e) => return Err(blame_file(e, from_file.as_ref())),
    };
    Cli::from_arg_matches(&matches).map_err(CliError::Clap)
}

/// Finds `--config FILE` and the index of the subcommand.
fn scan(args: &[OsString]) -> (Option<PathBuf>, Option<usize>) {
    let mut config = None;
    let mut sub = None;
    let mut i = 1;
    while i < args.len() {
        let a = args[i].to_string_lossy();
        if a == "--config" {
            config = args.get(i + 1).map(PathBuf::from);
            i += 2;
            continue;
        }
        if let Some(v) = a.strip_prefix("--config=") {
            config = Some(PathBuf::from(v));
        } else if !a.starts_with('-') && sub.is_none() {
            sub = Some(i);
        }
        i += 1;
    }
    (config, sub)
}

/// Turns the file's entries into `--key=value` arguments for subcommand `sub`.
fn file_args(path: &Path, sub: &str, cli_rest: &[OsString]) -> Result<Vec<(String, OsString)>, CliError> {
    let err = |msg: String| CliError::Config(format!("config file {}: {msg}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        err(format!(
            "not valid TOML: {}",
            e.message().lines().next().unwrap_or("parse error")
        ))
    })?;
    let command = Cli::command();
    let Some(sub_cmd) = command.find_subcommand(sub) else {
        // clap reports the unknown subcommand itself.
        return Ok(Vec::new());
    };
    let given_on_cli: HashSet<String> = cli_rest
        .iter()
        .filter_map(|a| a.to_str())
        .filter_map(|a| a.strip_prefix("--"))
        .map(|a| a.split('=').next().unwrap_or(a).to_owned())
        .collect();
    let mut out = Vec::new();
    for (key, value) in &table {
        let long = key.replace('_', "-");
        let arg = sub_cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()) && long != "config" && long != "help")
            .ok_or_else(|| err(format!("unknown key `{key}`")))?;
        if given_on_cli.contains(&long) {
            continue;
        }
        if let Some(env) = arg.get_env() {
            if std::env::var_os(env).is_some() {
                continue;
            }
        }
        let takes_value = arg.get_num_args().map(|n| n.takes_values()).unwrap_or(true);
        let values: Vec<&toml::Value> = match value {
            toml::Value::Array(items) => items.iter().collect(),
            v => vec![v],
        };
        for v in values {
            let text = match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) if !takes_value => {
                    if *b {
                        out.push((long.clone(), OsString::from(format!("--{long}"))));
                    }
                    continue;
                }
                toml::Value::Boolean(b) => b.to_string(),
                _ => {
                    return Err(err(format!(
                        "key `{key}` must be a string, number, boolean or array of them"
                    )))
                }
            };
            out.push((long.clone(), OsString::from(format!("--{long}={text}"))));
        }
    }
    Ok(out)
}

/// Rewrites a clap error about a value that came from the file so it names the file and key.
fn blame_file(e: clap::Error, from_file: Option<&(PathBuf, HashSet<String>)>) -> CliError {
    if let (Some((path, keys)), Some(arg)) = (from_file, e.get(ContextKind::InvalidArg)) {
        let arg = arg.to_string();
        let long = arg
            .trim_start_matches("--")
            .split([' ', '=', '<'])
            .next()
            .unwrap_or("")
            .to_owned();
        if keys.contains(&long) {
            let msg = crate::cli::one_line(&e);
            return CliError::Config(format!("config file {}: key `{long}`: {msg}", path.display()));
        }
    }
    CliError::Clap(e)
}

/// Parses `40000-60000`.
pub fn parse_port_range(s: &str) -> Result<RangeInclusive<u16>, String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| "expected LOW-HIGH, e.g. 40000-60000".to_owned())?;
    let a: u16 = a.trim().parse().map_err(|_| format!("`{a}` is not a port"))?;
    let b: u16 = b.trim().parse().map_err(|_| format!("`{b}` is not a port"))?;
    if a == 0 || a > b {
        return Err("expected 1 <= LOW <= HIGH".to_owned());
    }
    Ok(a..=b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Command;

    fn write(content: &str) -> tempfile_path::TempPath {
        tempfile_path::TempPath::with(content)
    }

    /// A file removed when dropped (no extra crate for one test helper).
    mod tempfile_path {
        pub struct TempPath(pub std::path::PathBuf);
        impl TempPath {
            pub fn with(content: &str) -> Self {
                let p = std::env::temp_dir().join(format!("duet-cfg-{}.toml", uuid_like()));
                std::fs::write(&p, content).unwrap();
                Self(p)
            }
        }
        impl Drop for TempPath {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
        fn uuid_like() -> String {
            use rand::RngCore;
            format!("{:016x}", rand::rng().next_u64())
        }
    }

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn file_values_apply_and_flags_win() {
        let f = write("http-listen = \"127.0.0.1:9999\"\nregion = \"eu\"\n");
        let p = f.0.to_str().unwrap();
        let cli = parse_with_file(args(&["duet", "--config", p, "up", "--region", "us"])).unwrap();
        let Command::Up(up) = cli.command else {
            panic!("not up")
        };
        assert_eq!(up.http_listen.port(), 9999);
        assert_eq!(up.region, "us");
    }

    #[test]
    fn unknown_key_is_refused_naming_it() {
        let f = write("no_such_key = 1\n");
        let p = f.0.to_str().unwrap();
        let e = parse_with_file(args(&["duet", "--config", p, "up"])).unwrap_err();
        assert!(e.to_string().contains("unknown key `no_such_key`"), "{e}");
    }

    #[test]
    fn bad_port_in_file_is_refused_naming_the_key() {
        let f = write("http_listen = \"127.0.0.1:70000\"\n");
        let p = f.0.to_str().unwrap();
        let e = parse_with_file(args(&["duet", "--config", p, "up"])).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("key `http-listen`"), "{msg}");
        assert!(!msg.contains('\n'), "one line: {msg}");
    }

    #[test]
    fn port_ranges_parse_and_refuse_nonsense() {
        assert_eq!(parse_port_range("40000-60000").unwrap(), 40000..=60000);
        assert!(parse_port_range("6-5").is_err());
        assert!(parse_port_range("0-5").is_err());
        assert!(parse_port_range("a-b").is_err());
    }
}
