//! `weir module push | ls | inspect | rm`.

use std::path::PathBuf;

use clap::Subcommand;
use serde_json::Value;

use super::{Body, Client, Failure, Outcome, Progress, cell, encode, out, print_json, table};

#[derive(Subcommand)]
pub enum ModuleCommand {
    /// Upload a component as the next version of a module (identical
    /// bytes give back the existing version).
    Push {
        /// The component (.wasm).
        file: PathBuf,
        /// The module's name; default: the file's stem with `_` as `-`.
        #[arg(long)]
        name: Option<String>,
    },
    /// List modules with their latest version.
    Ls,
    /// Show every version of a module (or one: NAME@VERSION).
    Inspect { module: String },
    /// Delete a version of a module: NAME@VERSION (refused while a topology
    /// uses it).
    Rm { module: String },
}

fn split_version(module: &str) -> Result<(&str, Option<&str>), Failure> {
    match module.split_once('@') {
        Some((n, v)) if !v.is_empty() => Ok((n, Some(v))),
        Some(_) => Err(Failure::Invalid(format!(
            "{module:?}: give NAME@VERSION, e.g. word-count@1"
        ))),
        None => Ok((module, None)),
    }
}

fn version_row(v: &Value) -> Vec<String> {
    vec![
        cell(&v["name"]),
        cell(&v["version"]),
        cell(&v["size"]),
        v["digest"]
            .as_str()
            .map(|d| d.chars().take(19).collect())
            .unwrap_or_default(),
        cell(&v["world"]),
    ]
}

const HEADER: [&str; 5] = ["NAME", "VERSION", "SIZE", "DIGEST", "WORLD"];

pub fn run(client: &Client, command: ModuleCommand) -> Outcome {
    match command {
        ModuleCommand::Push { file, name } => {
            let bytes = std::fs::read(&file)
                .map_err(|e| Failure::Other(format!("cannot read {}: {e}", file.display())))?;
            let name = match name {
                Some(n) => n,
                None => file
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .map(|s| s.replace('_', "-"))
                    .ok_or_else(|| {
                        Failure::Invalid(format!("{}: give the module a --name", file.display()))
                    })?,
            };
            let (status, v) = {
                let _p = Progress::start(format!(
                    "uploading {} ({} KiB) as {name}",
                    file.display(),
                    bytes.len() / 1024
                ));
                client.call(
                    "POST",
                    &format!("/v1/modules/{}", encode(&name)),
                    Body::Bytes(&bytes, "application/wasm"),
                )?
            };
            if client.json {
                print_json(&v);
            } else {
                let what = if status == 201 {
                    "stored"
                } else {
                    "already stored (same bytes)"
                };
                out(&format!(
                    "{} {what}: {} ({} bytes, {})\nexports: {}\n",
                    cell(&v["reference"]),
                    cell(&v["digest"]),
                    cell(&v["size"]),
                    cell(&v["world"]),
                    v["exports"]
                        .as_array()
                        .map(|a| a.iter().map(cell).collect::<Vec<_>>().join(", "))
                        .unwrap_or_default()
                ));
            }
        }
        ModuleCommand::Ls => {
            let (_, v) = client.call("GET", "/v1/modules", Body::Empty)?;
            if client.json {
                print_json(&v);
            } else {
                let rows: Vec<Vec<String>> = v["modules"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|m| {
                        let mut row = version_row(m);
                        row.insert(2, cell(&m["versions"]));
                        row
                    })
                    .collect();
                out(&table(
                    &["NAME", "LATEST", "VERSIONS", "SIZE", "DIGEST", "WORLD"],
                    &rows,
                ));
            }
        }
        ModuleCommand::Inspect { module } => {
            let (name, version) = split_version(&module)?;
            let path = match version {
                Some(v) => format!("/v1/modules/{}/versions/{}", encode(name), encode(v)),
                None => format!("/v1/modules/{}", encode(name)),
            };
            let (_, v) = client.call("GET", &path, Body::Empty)?;
            if client.json {
                print_json(&v);
            } else {
                let versions: Vec<Value> = match version {
                    Some(_) => vec![v],
                    None => v["versions"].as_array().cloned().unwrap_or_default(),
                };
                out(&table(
                    &HEADER,
                    &versions.iter().map(version_row).collect::<Vec<_>>(),
                ));
                for ver in &versions {
                    out(&format!(
                        "\n{}\n  digest:  {}\n  imports: {}\n  exports: {}\n",
                        cell(&ver["reference"]),
                        cell(&ver["digest"]),
                        ver["imports"]
                            .as_array()
                            .map(|a| a.iter().map(cell).collect::<Vec<_>>().join(", "))
                            .unwrap_or_default(),
                        ver["exports"]
                            .as_array()
                            .map(|a| a.iter().map(cell).collect::<Vec<_>>().join(", "))
                            .unwrap_or_default()
                    ));
                }
            }
        }
        ModuleCommand::Rm { module } => {
            let (name, Some(version)) = split_version(&module)? else {
                return Err(Failure::Invalid(format!(
                    "{module:?}: say which version to delete, NAME@VERSION (see `weir module inspect {module}`)"
                )));
            };
            client.call(
                "DELETE",
                &format!("/v1/modules/{}/versions/{}", encode(name), encode(version)),
                Body::Empty,
            )?;
            if client.json {
                print_json(&serde_json::json!({ "deleted": module }));
            } else {
                out(&format!("deleted {module}\n"));
            }
        }
    }
    Ok(())
}
