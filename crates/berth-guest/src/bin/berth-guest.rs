//! The guest as its own small binary (the `berth` binary embeds the same code as
//! `berth __guest`, so a one-binary install needs nothing else).

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(berth_guest::main_with_args(&args));
}
