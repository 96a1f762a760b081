//! `duet admin …`: administration from the command line. For now:
//! `create-moderator --email … --role moderator|senior|admin`, the password
//! prompted without echo (twice) or read from stdin (`--password-stdin`),
//! stored as an argon2id hash in the same database signaling uses.

use crate::cli::{AdminArgs, AdminCommand, CreateModeratorArgs, ModeratorRoleArg};
use anyhow::{bail, Context};
use std::io::{BufRead, IsTerminal, Write};

pub async fn run(args: AdminArgs) -> anyhow::Result<()> {
    match args.command {
        AdminCommand::CreateModerator(c) => create_moderator(&args.database_url, c).await,
    }
}

/// Reads one line (without its line ending) from `input`.
fn read_line(input: &mut impl BufRead) -> anyhow::Result<String> {
    let mut line = String::new();
    input.read_line(&mut line).context("cannot read the password")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// Turns terminal echo on or off (`stty`, so no unsafe code here).
fn echo(on: bool) {
    let _ = std::process::Command::new("stty")
        .arg(if on { "echo" } else { "-echo" })
        .stdin(std::process::Stdio::inherit())
        .status();
}

fn prompt(label: &str) -> anyhow::Result<String> {
    eprint!("{label}");
    std::io::stderr().flush().ok();
    echo(false);
    let line = read_line(&mut std::io::stdin().lock());
    echo(true);
    eprintln!();
    line
}

fn password(args: &CreateModeratorArgs) -> anyhow::Result<String> {
    if args.password_stdin {
        return read_line(&mut std::io::stdin().lock());
    }
    if !std::io::stdin().is_terminal() {
        bail!("no terminal to prompt for the password: pass it on stdin with --password-stdin");
    }
    let first = prompt("Password for the new moderator: ")?;
    let again = prompt("Again: ")?;
    if first != again {
        bail!("the passwords differ");
    }
    Ok(first)
}

/// The folder of a SQLite database file (created if missing, as `duet up` does).
fn sqlite_dir(url: &str) -> Option<std::path::PathBuf> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = path.split('?').next().unwrap_or("");
    if path.is_empty() || path.contains(":memory:") {
        return None;
    }
    std::path::Path::new(path)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(|p| p.to_path_buf())
}

async fn create_moderator(database_url: &str, args: CreateModeratorArgs) -> anyhow::Result<()> {
    let email = signaling::admin::auth::normalize_email(&args.email)
        .with_context(|| format!("`{}` is not an email address", args.email))?;
    let password = password(&args)?;
    let (min, max) = (
        signaling::admin::auth::MIN_PASSWORD_LEN,
        signaling::admin::auth::MAX_PASSWORD_LEN,
    );
    if password.chars().count() < min || password.len() > max {
        bail!("the password must be {min} to {max} characters");
    }
    let role = match args.role {
        ModeratorRoleArg::Moderator => "moderator",
        ModeratorRoleArg::Senior => "senior",
        ModeratorRoleArg::Admin => "admin",
    };
    if let Some(dir) = sqlite_dir(database_url) {
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let store = signaling::Store::connect(database_url)
        .await
        .context("cannot open the database")?;
    if store.moderator_by_email(&email).await?.is_some() {
        store.close().await;
        bail!("a moderator with the email {email} exists already");
    }
    let hash = tokio::task::spawn_blocking(move || signaling::store::hash_password(&password))
        .await
        .context("password hashing stopped")??;
    let id = store.insert_moderator(&email, &hash, role).await?;
    store
        .audit(
            "cli",
            "moderator_create",
            "moderator",
            &id,
            &serde_json::json!({ "email": email, "role": role }),
        )
        .await?;
    store.close().await;
    println!("created {role} {email} (id {id})");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_folder_comes_from_the_url() {
        assert_eq!(
            sqlite_dir("sqlite://./duet-data/duet.db?mode=rwc"),
            Some(std::path::PathBuf::from("./duet-data"))
        );
        assert_eq!(
            sqlite_dir("sqlite:/tmp/x/d.db"),
            Some(std::path::PathBuf::from("/tmp/x"))
        );
        assert_eq!(sqlite_dir("sqlite::memory:"), None);
        assert_eq!(sqlite_dir("postgres://root@127.0.0.1/db"), None);
        assert_eq!(sqlite_dir("sqlite://d.db"), None);
    }
}
