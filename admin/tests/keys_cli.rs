//! `admin keys rotate` as an operator runs it: the current value on standard input or in an
//! environment variable, the next value on standard output, notes on standard error, and no
//! secret in either when the input is bad.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn admin(args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_admin"))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("admin runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn generated(name: &str) -> String {
    let out = admin(&["keys", "generate"], "", &[]);
    assert!(out.status.success());
    text(&out.stdout)
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("SPIN_VARIABLE_{name}="))
                .map(str::to_owned)
        })
        .unwrap()
}

#[test]
fn rotate_reads_stdin_and_prints_the_next_value() {
    let current = generated("TOKEN_SIGNING_KEYS");
    let out = admin(
        &["keys", "rotate", "token-signing-keys", "--stage", "add"],
        &format!("{current}\n"),
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let value = stdout
        .strip_prefix("SPIN_VARIABLE_TOKEN_SIGNING_KEYS=")
        .unwrap()
        .trim_end();
    assert!(
        value.starts_with(&format!("{current},")),
        "old key first, new key appended"
    );
    assert_eq!(stdout.lines().count(), 1, "only the value on stdout");
    assert!(text(&out.stderr).contains("note: "), "notes go to stderr");
    assert!(
        !text(&out.stderr).contains(&current),
        "stderr never shows the key"
    );
}

#[test]
fn rotate_reads_an_environment_variable_and_formats_vars() {
    let current = generated("ENCRYPTION_KEY");
    let out = admin(
        &[
            "keys",
            "rotate",
            "encryption-key",
            "--stage",
            "add",
            "--current-env",
            "OLD_KEY",
            "--format",
            "vars",
        ],
        "",
        &[("OLD_KEY", &current)],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("encryption_key=")
            && stdout.trim_end().ends_with(&format!(",{current}"))
    );
}

#[test]
fn stripe_add_takes_the_new_secret_from_the_second_line() {
    let old = generated("STRIPE_WEBHOOK_SECRET");
    let new = generated("STRIPE_WEBHOOK_SECRET");
    let out = admin(
        &[
            "keys",
            "rotate",
            "stripe-webhook-secret",
            "--stage",
            "add",
            "--format",
            "toml",
        ],
        &format!("{old}\n{new}\n"),
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("stripe_webhook_secret = \"{new},{old}\"\n")
    );
}

#[test]
fn bad_input_fails_without_echoing_it() {
    let secret = "k1:VGhpcyBpcyBub3QgYSBrZXk="; // "This is not a key": 17 bytes
    let out = admin(
        &["keys", "rotate", "encryption-key", "--stage", "add"],
        &format!("{secret}\n"),
        &[],
    );
    assert!(!out.status.success());
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(all.contains("key entry 1 (kid k1)"), "{all}");
    assert!(!all.contains("VGhpcyBp") && !all.contains("This is"), "{all}");

    let out = admin(
        &["keys", "rotate", "token-signing-keys", "--stage", "add"],
        "",
        &[],
    );
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("standard input is empty"));
}

#[test]
fn current_on_the_command_line_warns() {
    let current = generated("TOKEN_SIGNING_KEYS");
    let out = admin(
        &[
            "keys",
            "rotate",
            "token-signing-keys",
            "--stage",
            "add",
            "--current",
            &current,
        ],
        "",
        &[],
    );
    assert!(out.status.success());
    assert!(text(&out.stderr).contains("visible in `ps`"));
}
