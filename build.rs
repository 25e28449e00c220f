//! Compiles in the git revision and the rustc version, for `bilge --version` and
//! `bilge_exporter_build_info`. `BILGE_REVISION` (a build argument of the image, whose context has
//! no `.git`) wins over git; without either the revision is `unknown`.

use std::process::Command;

fn output(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-env-changed=BILGE_REVISION");
    let revision = match std::env::var("BILGE_REVISION") {
        Ok(r) if !r.trim().is_empty() => r.trim().to_string(),
        _ => {
            // Rebuild when HEAD moves: HEAD itself, and the ref it points at.
            if let Some(dir) = output("git", &["rev-parse", "--git-dir"]) {
                println!("cargo:rerun-if-changed={dir}/HEAD");
                if let Some(r) = output("git", &["symbolic-ref", "-q", "HEAD"]) {
                    let common = output("git", &["rev-parse", "--git-common-dir"]).unwrap_or(dir);
                    println!("cargo:rerun-if-changed={common}/{r}");
                    println!("cargo:rerun-if-changed={common}/packed-refs");
                }
            }
            output("git", &["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into())
        }
    };
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc_version = output(&rustc, &["--version"])
        .and_then(|v| v.split_whitespace().nth(1).map(str::to_string))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=BILGE_BUILD_REVISION={revision}");
    println!("cargo:rustc-env=BILGE_BUILD_RUSTC={rustc_version}");
}
