//! Build outcomes (named `builds`, not `build`, which tools often skip as generated output):
//! `bilge build` runs a build command ([`run`], [`child`]), classifies a
//! failure ([`classify`]) and records the outcome ([`submit`]); the build API validates pushed
//! outcomes ([`record`]); `bilge serve`'s build metrics follow the store's summary (`crate::history`).

pub mod child;
pub mod classify;
pub mod record;
pub mod run;
pub mod submit;
