//! `weir state get TOPOLOGY OPERATOR STATE KEY`.

use clap::Subcommand;

use super::{Body, Client, Outcome, cell, encode, out, print_json};

#[derive(Subcommand)]
pub enum StateCommand {
    /// The value of an operator's keyed value state for one key.
    Get {
        topology: String,
        operator: String,
        state: String,
        key: String,
        /// KEY is base64 (a binary key).
        #[arg(long)]
        b64: bool,
    },
}

pub fn run(client: &Client, command: StateCommand) -> Outcome {
    let StateCommand::Get {
        topology,
        operator,
        state,
        key,
        b64,
    } = command;
    let param = if b64 { "key_b64" } else { "key" };
    let (_, v) = client.call(
        "GET",
        &format!(
            "/v1/topologies/{}/operators/{}/state/{}?{param}={}",
            encode(&topology),
            encode(&operator),
            encode(&state),
            encode(&key)
        ),
        Body::Empty,
    )?;
    if client.json {
        print_json(&v);
    } else if v.get("value").is_some() {
        out(&format!("{}\n", v["value"]));
    } else {
        out(&format!("value_b64: {}\n", cell(&v["value_b64"])));
    }
    Ok(())
}
