//! Concerns of the whole process rather than of one step: stopping cleanly on SIGINT/SIGTERM
//! ([`interrupt`]), progress lines ([`progress`]), the resources a run used ([`resources`]),
//! lock files with their holder's note ([`lockfile`]), and the faults the tests inject in test
//! builds only ([`fault_injection`]).

pub mod fault_injection;
pub mod interrupt;
pub mod lockfile;
pub mod progress;
pub mod resources;
