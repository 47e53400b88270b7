//! `aivault-runner`: started by `aivaultd` for one run; see the library
//! (`aivault_runner`) for the self-confinement it applies before exec.

fn main() {
    eprintln!("aivault-runner is started by aivaultd");
    std::process::exit(2);
}
