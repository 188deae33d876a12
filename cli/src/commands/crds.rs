//! `krt crds`: the generated CustomResourceDefinitions.

use std::path::PathBuf;

use clap::Args;

use crate::Status;

/// Arguments of `krt crds`.
#[derive(Debug, Args)]
pub struct CrdsArgs {
    /// Write one file per kind into this directory (as committed in
    /// charts/kruntimes/crds) instead of printing one stream.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

/// Prints or writes the CRDs.
pub fn run(args: &CrdsArgs) -> Status {
    match write(args) {
        Ok(()) => Status::Ok,
        Err(e) => {
            eprintln!("krt crds: {e:#}");
            Status::BadInput
        }
    }
}

fn write(args: &CrdsArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    match &args.out_dir {
        None => {
            print!("{}", kruntimes_api::crd::all_yaml()?);
        }
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            for generated in kruntimes_api::crd::all() {
                let path = dir.join(generated.file_name);
                std::fs::write(&path, kruntimes_api::crd::to_yaml(&generated.crd)?)
                    .with_context(|| format!("writing {}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
        }
    }
    Ok(())
}
