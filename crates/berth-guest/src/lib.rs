//! `berth-guest`: the init process of every Berth sandbox, and the protocol the host speaks
//! to it over a Unix socket. The host side lives in `berth-sandbox`.

pub mod protocol;

#[cfg(target_os = "linux")]
mod confine;
#[cfg(target_os = "linux")]
mod launch;
#[cfg(target_os = "linux")]
mod server;

/// Runs the guest with its command-line arguments (without the program name); returns the
/// process exit code. `launch` is the only mode today: build a namespace sandbox from the
/// config on stdin and serve inside it.
pub fn main_with_args(args: &[String]) -> i32 {
    match args.first().map(String::as_str) {
        #[cfg(target_os = "linux")]
        Some("launch") => launch::run(),
        _ => {
            eprintln!("usage: berth-guest launch < config.json");
            2
        }
    }
}
