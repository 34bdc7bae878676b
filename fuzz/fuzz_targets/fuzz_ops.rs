//! Operation sequences on the engine and on the reference model, compared after every step.
//! The harness is `tests/reference_model/`, shared with the stable twin `tests/model.rs`.

#![no_main]

#[path = "../../tests/reference_model/mod.rs"]
mod reference_model;

use libfuzzer_sys::fuzz_target;
use reference_model::harness::Scenario;

fuzz_target!(|data: &[u8]| {
    let scenario = Scenario::decode(data);
    if let Err(difference) = reference_model::harness::run(&scenario) {
        panic!("the engine and the reference model differ\n{difference}");
    }
});
