//! `filter`: passes the events whose JSON object value satisfies
//! `<field> <op> <value>` (config `field`, `op` one of `gt`, `lt`, `eq`,
//! `ne`, and `value`), drops the rest. `gt`/`lt` compare two numbers
//! numerically or two strings by code point; other pairs do not satisfy
//! them. `eq`/`ne` compare JSON values (numbers numerically). A value that
//! is not an object, or lacks the field, does not pass (even for `ne`); a
//! value that is not JSON is an error.

use std::cmp::Ordering;

use serde::Deserialize;
use serde_json::Value;
use weir_sdk::{Context, Error, Event, Operator, Setup, export_operator};

#[derive(Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Op {
    Gt,
    Lt,
    Eq,
    Ne,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    field: String,
    op: Op,
    value: Value,
}

struct Filter {
    config: Config,
}

fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => compare(a, b) == Some(Ordering::Equal),
        _ => a == b,
    }
}

impl Operator for Filter {
    type Config = Config;

    fn init(config: Config, _: &mut Setup) -> Result<Self, String> {
        Ok(Filter { config })
    }

    fn process(&mut self, ctx: &mut Context, event: Event) -> Result<(), Error> {
        // Only the field is built (a number costs no allocation); the rest
        // of the object is read past.
        let Some(field) = event.json_field::<Value>(&self.config.field)? else {
            return Ok(());
        };
        let wanted = &self.config.value;
        let pass = match self.config.op {
            Op::Gt => compare(&field, wanted) == Some(Ordering::Greater),
            Op::Lt => compare(&field, wanted) == Some(Ordering::Less),
            Op::Eq => equal(&field, wanted),
            Op::Ne => !equal(&field, wanted),
        };
        if pass {
            ctx.forward(&event)?;
        }
        Ok(())
    }
}

export_operator!(Filter);
