//! Records oa-run's build identity (git commit, dirty flag) for `--version`, the manifest and
//! `report`. Without git or `.git` (a crates.io build, a source export) both are left empty.

include!("build_support/git.rs");

fn main() {
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let (commit, dirty) = match probe(&dir) {
        Some((c, d)) => (c, if d { "true" } else { "false" }),
        None => (String::new(), ""),
    };
    println!("cargo:rustc-env=OA_RUN_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=OA_RUN_GIT_DIRTY={dirty}");
    for p in [
        "build.rs",
        "build_support",
        "src",
        "Cargo.toml",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={p}");
    }
    for p in watch_paths(&dir) {
        println!("cargo:rerun-if-changed={}", p.display());
    }
}
