//! Text logs carry colour only on a terminal, and never with `NO_COLOR` set.

use std::process::Command;

use crate::helpers::tokenmint;

const ESCAPE: &str = "\u{1b}[";

/// `serve --dev` for two seconds with stderr on a pipe, or on a terminal (`script`).
fn dev_logs(terminal: bool, no_color: Option<&str>) -> Option<String> {
    let binary = tokenmint().get_program().to_owned();
    let serve = format!(
        "timeout -s TERM 2 '{}' serve --dev --listen 127.0.0.1:0",
        binary.to_str().expect("UTF-8 path")
    );
    let mut command = if terminal {
        // util-linux `script` runs the command on a pseudo-terminal.
        let mut command = Command::new("script");
        command.args(["-qec", &serve, "/dev/null"]);
        command
    } else {
        let mut command = Command::new("sh");
        command.args(["-c", &format!("{serve} 2>&1")]);
        command
    };
    command.env_remove("RUST_LOG").env_remove("NO_COLOR");
    if let Some(value) = no_color {
        command.env("NO_COLOR", value);
    }
    // `timeout` ends serve with SIGTERM and exits 124; `script` fails without a pty.
    let output = command.stdin(std::process::Stdio::null()).output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.contains("INFO").then_some(text)
}

#[test]
fn text_logs_are_coloured_only_on_a_terminal_and_never_with_no_color() {
    let piped = dev_logs(false, None).expect("serve --dev logs");
    assert!(!piped.contains(ESCAPE), "colour in a pipe: {piped:?}");
    let Some(terminal) = dev_logs(true, None) else {
        eprintln!("no `script` here to give serve a terminal; the terminal half is skipped");
        return;
    };
    assert!(
        terminal.contains(ESCAPE),
        "no colour on a terminal: {terminal:?}"
    );
    let no_color = dev_logs(true, Some("1")).expect("serve --dev logs on a terminal");
    assert!(
        !no_color.contains(ESCAPE),
        "colour despite NO_COLOR: {no_color:?}"
    );
}
