//! Man pages (clap_mangen) and shell completions (clap_complete) of a mos program, from
//! its own command-line description: `PROGRAM --generate-docs DIR` writes
//! `DIR/man/man1/PROGRAM.1` (and one page per subcommand, `PROGRAM-SUB.1`) and
//! `DIR/completions/{bash/PROGRAM, zsh/_PROGRAM, fish/PROGRAM.fish}`, then exits.
//! `make install` runs it for each program. Looked at before the program parses its
//! arguments, so a daemon's required options do not stand in the way.

use std::path::Path;

/// If this process was asked `--generate-docs DIR` (its only arguments), write the docs
/// of `cmd` there and exit (status 1 with a message if that fails); else return.
pub fn generate_if_asked(cmd: impl FnOnce() -> clap::Command) {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if args.len() != 2 || args[0] != "--generate-docs" {
        return;
    }
    let dir = Path::new(&args[1]);
    match generate(cmd(), dir) {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("--generate-docs {}: {e}", dir.display());
            std::process::exit(1);
        }
    }
}

/// Write `cmd`'s man pages and completions under `dir`.
pub fn generate(mut cmd: clap::Command, dir: &Path) -> std::io::Result<()> {
    cmd.build();
    let name = cmd.get_name().to_string();
    let man = dir.join("man").join("man1");
    std::fs::create_dir_all(&man)?;
    write_man(&cmd, &name, &man)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        let page = format!("{name}-{}", sub.get_name());
        write_man(&sub.clone().name(page.clone()), &page, &man)?;
    }
    for (shell, file) in [(clap_complete::Shell::Bash, name.clone()), (clap_complete::Shell::Zsh, format!("_{name}")), (clap_complete::Shell::Fish, format!("{name}.fish"))] {
        let d = dir.join("completions").join(shell.to_string());
        std::fs::create_dir_all(&d)?;
        let mut f = std::fs::File::create(d.join(file))?;
        clap_complete::generate(shell, &mut cmd, name.clone(), &mut f);
    }
    Ok(())
}

fn write_man(cmd: &clap::Command, name: &str, dir: &Path) -> std::io::Result<()> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut buf)?;
    std::fs::write(dir.join(format!("{name}.1")), buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_and_completions_for_a_command_and_its_subcommands() {
        let cmd = clap::Command::new("demo").about("a demo").subcommand(clap::Command::new("run").about("run it").arg(clap::Arg::new("x").long("x")));
        let d = tempfile_dir();
        generate(cmd, &d).unwrap();
        let page = std::fs::read_to_string(d.join("man/man1/demo.1")).unwrap();
        assert!(page.contains(".TH demo") && page.contains("a demo"), "{page}");
        assert!(std::fs::read_to_string(d.join("man/man1/demo-run.1")).unwrap().contains("run it"));
        assert!(std::fs::read_to_string(d.join("completions/bash/demo")).unwrap().contains("complete"));
        assert!(d.join("completions/zsh/_demo").exists() && d.join("completions/fish/demo.fish").exists());
        let _ = std::fs::remove_dir_all(&d);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("clidocs-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }
}
