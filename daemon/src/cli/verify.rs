//! `moed verify`: checks every file of a model package against the sizes and SHA-256 sums in its manifest.

use anyhow::Context;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// The model package directory.
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
}

pub fn run(args: VerifyArgs) -> anyhow::Result<()> {
    let pkg = crate::package::Package::open(&args.model)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let report = pkg
        .verify()
        .with_context(|| format!("verifying {}", args.model.display()))?;
    println!(
        "{}: {} files, {} bytes, all sizes and SHA-256 sums match manifest.json",
        args.model.display(),
        report.files,
        report.bytes
    );
    let m = pkg.manifest();
    println!(
        "format_version {}; weights by graph kind:",
        m.format_version
    );
    for line in m.precision_lines() {
        println!("  {line}");
    }
    Ok(())
}
