//! `stack`: a declarative infrastructure engine in the style of Pulumi/CDK.
//!
//! Resources are Rust values added to a [`engine::Stack`]; attributes that exist only
//! after creation are [`engine::Output`] values which other resources take as inputs.
//! Those references are also the dependency edges of the graph the engine plans and
//! applies. Providers (one per resource kind) live under [`providers`]; the project's own
//! infrastructure is declared in [`app`].

// `::stack` in the code `#[derive(Resource)]` generates names this crate here too.
extern crate self as stack;

pub mod app;
pub mod artifacts;
pub mod aws_rules;
pub mod config;
pub mod engine;
pub mod error;
pub mod local;
pub mod providers;
