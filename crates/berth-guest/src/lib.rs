//! `berth-guest`: the init process of every Berth sandbox, and the protocol the host speaks
//! to it over a Unix socket. The host side lives in `berth-sandbox`.

pub mod protocol;

#[cfg(target_os = "linux")]
mod confine;
#[cfg(target_os = "linux")]
mod launch;
#[cfg(target_os = "linux")]
mod server;
#[cfg(target_os = "linux")]
mod shell;

/// Runs the guest with its command-line arguments (without the program name); returns the
/// process exit code. `launch` builds a namespace sandbox from the config on stdin and serves
/// inside it; `serve` serves inside a sandbox someone else built (gVisor).
pub fn main_with_args(args: &[String]) -> i32 {
    match args.first().map(String::as_str) {
        #[cfg(target_os = "linux")]
        Some("launch") => launch::run(),
        #[cfg(target_os = "linux")]
        Some("serve") => launch::serve(args.get(1).map(String::as_str).unwrap_or("[]")),
        _ => {
            eprintln!("usage: berth-guest launch < config.json | berth-guest serve BRIDGES_JSON");
            2
        }
    }
}
