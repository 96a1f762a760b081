#![allow(clippy::unwrap_used)] // test helpers may unwrap: a failure is a test failure
//! `duet admin create-moderator`: the account lands in the database with an
//! argon2id hash that verifies; duplicates, weak passwords and a missing
//! terminal are refused with one clear line and a failing exit code.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_duet"));
    for (k, _) in std::env::vars() {
        if k.starts_with("DUET_") {
            c.env_remove(k);
        }
    }
    let mut child = c
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            // A command that refuses its arguments (an unknown role, say)
            // exits before reading stdin: a closed pipe is its answer, not
            // a test failure. Its exit status and stderr are checked below.
            if let Err(e) = input.write_all(s.as_bytes()) {
                assert_eq!(
                    e.kind(),
                    std::io::ErrorKind::BrokenPipe,
                    "writing the password: {e}"
                );
            }
        }
    }
    child.wait_with_output().unwrap()
}

#[tokio::test]
async fn create_moderator_stores_an_argon2id_account_and_refuses_bad_input() {
    let dir = std::env::temp_dir().join(format!("duet-admin-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // The folder does not exist yet: it is created like `duet up` does.
    let url = format!("sqlite://{}/data/duet.db?mode=rwc", dir.display());
    let create = |email: &str, role: &str, pw: Option<&str>, stdin_flag: bool| {
        let mut args = vec![
            "admin",
            "create-moderator",
            "--database-url",
            &url,
            "--email",
            email,
            "--role",
            role,
        ];
        if stdin_flag {
            args.push("--password-stdin");
        }
        run(&args, pw)
    };

    let out = create("Mia@Example.org", "senior", Some("correct horse battery\n"), true);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("created senior mia@example.org"));

    let again = create("mia@example.org", "admin", Some("another password!!\n"), true);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
    let weak = create("bob@example.org", "moderator", Some("short\n"), true);
    assert!(!weak.status.success());
    assert!(String::from_utf8_lossy(&weak.stderr).contains("10 to 1024 characters"));
    let bad_email = create("bob", "moderator", Some("correct horse battery\n"), true);
    assert!(!bad_email.status.success());
    let no_tty = create("bob@example.org", "moderator", None, false);
    assert!(!no_tty.status.success());
    assert!(String::from_utf8_lossy(&no_tty.stderr).contains("--password-stdin"));
    let bad_role = create("bob@example.org", "boss", Some("correct horse battery\n"), true);
    assert_eq!(bad_role.status.code(), Some(2), "clap refuses an unknown role");

    let store = signaling::Store::connect(&url).await.unwrap();
    let m = store
        .moderator_by_email("mia@example.org")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.role, "senior");
    assert!(m.password_hash.starts_with("$argon2id$"));
    assert!(signaling::store::verify_password(
        "correct horse battery",
        &m.password_hash
    ));
    assert!(store
        .moderator_by_email("bob@example.org")
        .await
        .unwrap()
        .is_none());
    // The creation is in the audit log.
    let log = store.audit_entries(10).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(
        (log[0].1.as_str(), log[0].2.as_str()),
        ("cli", "moderator_create")
    );
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}
