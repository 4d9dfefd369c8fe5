//! The help texts, pinned: `--help` of every command compared with `tests/help/*.txt`. After a
//! deliberate change, regenerate with `UPDATE_HELP=1 cargo test -p integration-cli --test help`
//! and review the diff.

mod common;

use common::cli;

const COMMANDS: &[&[&str]] = &[
    &[],
    &["call"],
    &["config"],
    &["config", "validate"],
    &["config", "show"],
    &["config", "diff"],
    &["config", "list"],
    &["config", "history"],
    &["config", "put"],
    &["config", "rollback"],
    &["status"],
    &["serve"],
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_texts_match_their_pinned_copies() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/help");
    let update = std::env::var_os("UPDATE_HELP").is_some();
    let mut stale = Vec::new();
    for command in COMMANDS {
        let mut args = command.to_vec();
        args.push("--help");
        let run = cli(&args).run().await.expect_code(0);
        let name = if command.is_empty() {
            "integration".to_owned()
        } else {
            command.join("-")
        };
        let pinned = dir.join(format!("{name}.txt"));
        if update {
            std::fs::write(&pinned, &run.stdout).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&pinned)
            .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_HELP=1 writes it)", pinned.display()));
        if expected != run.stdout {
            stale.push(format!(
                "integration {} --help differs from {}:\n{}",
                command.join(" "),
                pinned.display(),
                run.stdout
            ));
        }
    }
    assert!(stale.is_empty(), "{}", stale.join("\n\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_top_level_help_documents_every_exit_code() {
    let run = cli(["--help"]).run().await.expect_code(0);
    for code in 0..=10 {
        assert!(
            run.stdout
                .lines()
                .any(|line| line.trim_start().starts_with(&format!("{code} "))),
            "exit code {code} is documented:\n{}",
            run.stdout
        );
    }
}
