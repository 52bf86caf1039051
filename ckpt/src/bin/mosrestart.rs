//! mosrestart: become the process saved in an image. Usually run by `mos restart`.
//! Usage: mosrestart [--eager] [--no-verify] [--unlink] IMAGE

fn main() {
    let mut lazy = true;
    let mut verify = true;
    let mut unlink = false;
    let mut path = None;
    for a in std::env::args().skip(1) {
        match a.as_str() {
            "--eager" => lazy = false,
            "--lazy" => lazy = true,
            "--no-verify" => verify = false,
            "--unlink" => unlink = true,
            "-h" | "--help" => {
                println!("usage: mosrestart [--eager|--lazy] [--no-verify] [--unlink] IMAGE");
                return;
            }
            _ if path.is_none() && !a.starts_with("--") => path = Some(a),
            _ => {
                eprintln!("mosrestart: unexpected argument {a:?}");
                std::process::exit(2);
            }
        }
    }
    let Some(path) = path else {
        eprintln!("mosrestart: missing IMAGE argument");
        std::process::exit(2);
    };
    let opts = ckpt::restore::Options { lazy, verify, unlink };
    let Err(e) = ckpt::restore::run(std::path::Path::new(&path), opts);
    eprintln!("mos restart: {path}: {e}");
    std::process::exit(2);
}
