//! What `cargo xtask bench` and `cargo xtask chaos` share: both build a binary of the
//! `integration-tests` package and run it, either as a smoke run that writes nothing or as the full
//! run that writes its report at the workspace root and records the command that made it.

use std::process::Command;

/// The arguments a suite's command accepts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spec {
    /// The command's name (`bench`, `chaos`).
    pub(crate) name: &'static str,
    /// Flags of xtask's own, without a value (`--debug`), besides `--smoke`.
    pub(crate) flags: &'static [&'static str],
    /// Options with a value, passed on to the binary.
    pub(crate) values: &'static [&'static str],
    /// Of those, the ones a smoke run accepts too.
    pub(crate) smoke_values: &'static [&'static str],
}

/// What a suite's command was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Options {
    pub(crate) smoke: bool,
    /// The flags of [`Spec::flags`] given.
    pub(crate) flags: Vec<&'static str>,
    /// Options and their values, passed on to the binary.
    pub(crate) passed: Vec<String>,
}

impl Options {
    /// Whether `flag` (one of [`Spec::flags`]) was given.
    pub(crate) fn has(&self, flag: &str) -> bool {
        self.flags.contains(&flag)
    }
}

/// Parses `args` against `spec`; `Err` is the message of a usage error.
pub(crate) fn parse(spec: &Spec, args: &[String]) -> Result<Options, String> {
    let name = spec.name;
    let mut options = Options {
        smoke: false,
        flags: Vec::new(),
        passed: Vec::new(),
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let arg = arg.as_str();
        if arg == "--smoke" {
            options.smoke = true;
        } else if let Some(flag) = spec.flags.iter().find(|flag| **flag == arg) {
            options.flags.push(flag);
        } else if spec.values.contains(&arg) {
            let value = args
                .next()
                .ok_or_else(|| format!("`{name} {arg}` needs a value"))?;
            options.passed.extend([arg.to_owned(), value.clone()]);
        } else {
            return Err(format!("`{name}` does not take `{arg}`"));
        }
    }
    if options.smoke {
        let refused: Vec<&str> = options
            .passed
            .iter()
            .step_by(2)
            .map(String::as_str)
            .filter(|option| !spec.smoke_values.contains(option))
            .collect();
        if !refused.is_empty() {
            return Err(format!(
                "`{name} --smoke` has its own settings, it does not take {}: use the full run",
                refused.join(", ")
            ));
        }
    }
    Ok(options)
}

/// The binary's arguments: `--smoke` and the options passed on, or for the full run `--out ROOT`,
/// `extra`, `--command "cargo xtask NAME ..."` (the command recorded in the report) and the
/// options passed on.
pub(crate) fn binary_args(
    spec: &Spec,
    options: &Options,
    root: &std::path::Path,
    extra: &[String],
) -> Vec<String> {
    let mut args = Vec::new();
    if options.smoke {
        args.push("--smoke".to_owned());
    } else {
        let mut command = format!("cargo xtask {}", spec.name);
        for arg in options
            .flags
            .iter()
            .copied()
            .chain(options.passed.iter().map(String::as_str))
        {
            command.push(' ');
            command.push_str(arg);
        }
        args.extend(["--out".to_owned(), root.display().to_string()]);
        args.extend(extra.iter().cloned());
        args.extend(["--command".to_owned(), command]);
    }
    args.extend(options.passed.iter().cloned());
    args
}

/// A command line as shown in the log: `NAME=value` pairs (already redacted), the program, its
/// arguments, quoted where they hold a space.
pub(crate) fn shown(env: &[String], program: &std::path::Path, args: &[String]) -> String {
    let mut shown = env.to_vec();
    shown.push(program.display().to_string());
    shown.extend(args.iter().map(|arg| {
        if arg.contains(' ') {
            format!("\"{arg}\"")
        } else {
            arg.clone()
        }
    }));
    shown.join(" ")
}

/// Runs `command`, printed as `shown` under the suite's name; `Err` says why it failed.
pub(crate) fn run_command(name: &str, command: &mut Command, shown: &str) -> Result<(), String> {
    println!("{name}: {shown}");
    let status = command
        .status()
        .map_err(|e| format!("`{shown}` could not run: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{shown}` exited with {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const SPEC: Spec = Spec {
        name: "chaos",
        flags: &["--debug"],
        values: &["--scenarios", "--rate-scale"],
        smoke_values: &["--scenarios"],
    };

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|arg| (*arg).to_owned()).collect()
    }

    #[test]
    fn options_flags_and_values_are_told_apart() {
        let options = parse(&SPEC, &strings(&["--debug", "--rate-scale", "0.5"])).unwrap();
        assert!(!options.smoke && options.has("--debug"));
        assert_eq!(options.passed, ["--rate-scale", "0.5"]);
        assert_eq!(
            binary_args(&SPEC, &options, Path::new("/w"), &[]),
            [
                "--out",
                "/w",
                "--command",
                "cargo xtask chaos --debug --rate-scale 0.5",
                "--rate-scale",
                "0.5"
            ]
        );
    }

    #[test]
    fn usage_errors_name_the_argument() {
        let error = parse(&SPEC, &strings(&["--scenarios"])).unwrap_err();
        assert!(error.contains("needs a value"), "{error}");
        let error = parse(&SPEC, &strings(&["--rounds", "3"])).unwrap_err();
        assert!(error.contains("`--rounds`"), "{error}");
        let error = parse(&SPEC, &strings(&["--smoke", "--rate-scale", "2"])).unwrap_err();
        assert!(error.contains("--rate-scale"), "{error}");
        let smoke = parse(&SPEC, &strings(&["--smoke", "--scenarios", "slow"])).unwrap();
        assert_eq!(
            binary_args(&SPEC, &smoke, Path::new("/w"), &[]),
            ["--smoke", "--scenarios", "slow"]
        );
    }

    #[test]
    fn shown_commands_quote_what_holds_a_space() {
        assert_eq!(
            shown(
                &["REDIS_URL=redis://h".to_owned()],
                Path::new("/t/bench"),
                &strings(&["--command", "cargo xtask bench"])
            ),
            "REDIS_URL=redis://h /t/bench --command \"cargo xtask bench\""
        );
    }
}
