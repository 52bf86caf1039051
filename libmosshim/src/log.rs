//! The shim's log: one line per event appended to `MOS_LOG_FILE` (nothing when unset),
//! never the application's stderr. Allocates and opens a file: never call it from a signal
//! handler, the SIGSYS handler or the image-writer child's async-signal-safe paths.


pub fn log(msg: &str) {
    let Some(f) = crate::config::get().and_then(|c| c.log_file.as_deref()) else {
        return;
    };
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(f)
    {
        let _ = writeln!(f, "mos[{}]: {msg}", crate::identity::vpid());
    }
}
