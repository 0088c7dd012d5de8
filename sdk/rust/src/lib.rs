//! Write Weir stream operators in Rust.
//!
//! An operator is a type implementing [`Operator`]: Weir calls
//! [`Operator::process`] once per event, with a [`Context`] that emits
//! events, reads and writes keyed state and registers timers. One line,
//! [`export_operator!`], turns the type into a Weir component:
//!
//! ```ignore
//! use weir_sdk::{export_operator, Context, Error, Event, Operator, Setup, ValueState};
//!
//! struct WordCount { count: ValueState<u64> }
//!
//! impl Operator for WordCount {
//!     type Config = ();
//!     fn init(_: (), setup: &mut Setup) -> Result<Self, String> {
//!         Ok(WordCount { count: setup.value_state("count") })
//!     }
//!     fn process(&mut self, ctx: &mut Context, event: Event) -> Result<(), Error> {
//!         let n = self.count.get(ctx)?.unwrap_or(0) + 1;
//!         self.count.set(ctx, &n)?;
//!         ctx.emit_json(event.key, &n, event.timestamp)
//!     }
//! }
//! export_operator!(WordCount);
//! ```
//!
//! What this crate hides: the batch layout of the `weir:operator` contract
//! (events and the batch's value state travel column by column, see
//! `wit/types.wit`), the bookkeeping that makes a failing event leave no
//! output and no value-state change behind, and the JSON (de)serialisation of
//! config and typed state. It does not hide that map and list state go
//! through host calls: prefer [`ValueState`] on hot paths.
//!
//! The fast way to read and write events, which the example guests follow:
//! [`Event::json`] into a struct that borrows from the batch (or
//! [`Event::json_field`] for one field named in the config), and output
//! written straight into the call's buffer with [`Context::emit_json`] or
//! [`Context::emit_like_with`]; no `serde_json::Value` per event. To
//! rewrite an object (keep most members, change some), [`Members`] reads
//! its members in one pass, each value as raw JSON text to copy.
//!
//! Contract `weir:operator@0.2.0` adds three things an operator can use:
//! the input a batch came from ([`Context::input`], [`Event::input`]) for
//! joins and enrichment; named side outputs declared with
//! [`Setup::side_output`] and written with [`Context::emit_to`]; and state
//! whose entries expire, declared with a [`Ttl`] ([`Setup::value_state_ttl`],
//! [`Setup::map_state_ttl`], [`Setup::list_state_ttl`]).
//!
//! Key types: [`Operator`], [`Setup`] (declare state in `init`), [`Context`]
//! (per call), [`Event`] and [`Timer`] (inputs), [`ValueState`],
//! [`MapState`], [`ListState`] (typed state), [`Error`]; event-time windows
//! in [`window`].

mod context;
mod error;
mod event;
mod json;
mod object;
mod runtime;
mod state;
pub mod window;

/// Bindings generated from `wit/0.2.0/` (the `weir:operator@0.2.0` package). Authors do
/// not need them; they are public for the export macro and for the rare
/// operator that wants the raw contract.
#[allow(unsafe_code, missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "operator",
        path: "wit",
        pub_export_macro: true,
        export_macro_name: "__export_weir_bindings",
        default_bindings_module: "weir_sdk::bindings",
    });
}

pub use context::{Context, Setup, Ttl};
pub use error::Error;
pub use event::{Event, Timer};
pub use object::{Members, Object};
pub use state::{Encoding, ListState, MapState, ValueState};

pub use bindings::weir::operator::context::LogLevel;
pub use bindings::weir::operator::types::TimeDomain;

/// The serde_json this SDK reads and writes events and state with, so that
/// an operator's `Value`, `RawValue` and errors are the same types.
pub use serde_json;

/// A stream operator. One value of the type lives in each operator instance
/// for the instance's whole life; Weir calls it one event at a time.
pub trait Operator: Sized + 'static {
    /// The operator's parameters: the `config` object of the topology,
    /// deserialised from JSON. Use `()` for none, or a struct with
    /// `#[derive(Deserialize)]`.
    type Config: serde::de::DeserializeOwned;

    /// Builds the operator from its config and declares its state.
    /// An `Err` says what is wrong with the config; the operator does not
    /// start.
    fn init(config: Self::Config, setup: &mut Setup) -> Result<Self, String>;

    /// Handles one event. An `Err` marks this event as failed: the events it
    /// emitted and the value state it wrote are dropped, and the host applies
    /// the operator's error policy (fail, skip or dead-letter) to it alone.
    fn process(&mut self, ctx: &mut Context, event: Event<'_>) -> Result<(), Error>;

    /// Handles a timer registered with [`Context::register_timer`]. The
    /// context's key is the timer's key.
    fn on_timer(&mut self, ctx: &mut Context, timer: Timer<'_>) -> Result<(), Error> {
        let _ = (ctx, timer);
        Ok(())
    }
}

/// Writes a line to the host's log (target `weir::guest`).
pub fn log(level: LogLevel, message: &str) {
    bindings::weir::operator::context::log(level, message);
}

/// Adds `delta` to the operator's metric counter `name`.
pub fn counter_add(name: &str, delta: u64) {
    bindings::weir::operator::context::counter_add(name, delta);
}

/// Makes a type implementing [`Operator`] the component's operator.
/// Use it once per crate.
#[macro_export]
macro_rules! export_operator {
    ($ty:ty) => {
        const _: () = {
            struct WeirExport;

            ::std::thread_local! {
                static RUNTIME: ::core::cell::RefCell<$crate::__private::Runtime<$ty>> =
                    ::core::cell::RefCell::new($crate::__private::Runtime::new());
            }

            impl $crate::__private::Guest for WeirExport {
                fn init(
                    config: ::std::string::String,
                ) -> ::core::result::Result<$crate::__private::OperatorSpec, ::std::string::String>
                {
                    RUNTIME.with_borrow_mut(|rt| rt.init(config))
                }
                fn process(
                    input: $crate::__private::ProcessInput,
                ) -> ::core::result::Result<$crate::__private::CallOutput, ::std::string::String>
                {
                    RUNTIME.with_borrow_mut(|rt| rt.process(input))
                }
                fn on_timer(
                    input: $crate::__private::TimerInput,
                ) -> ::core::result::Result<$crate::__private::CallOutput, ::std::string::String>
                {
                    RUNTIME.with_borrow_mut(|rt| rt.on_timer(input))
                }
            }

    $crate::bindings::__export_weir_bindings!(WeirExport with_types_in $crate::bindings);
        };
    };
}

/// Used by [`export_operator!`]; not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use crate::bindings::exports::weir::operator::handler::Guest;
    pub use crate::bindings::weir::operator::types::{
        CallOutput, OperatorSpec, ProcessInput, TimerInput,
    };
    pub use crate::runtime::Runtime;
}
