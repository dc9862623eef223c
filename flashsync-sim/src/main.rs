//! `flashsync-sim`: see [`flashsync_sim::cli`].

fn main() -> std::process::ExitCode {
    flashsync_sim::cli::main()
}
