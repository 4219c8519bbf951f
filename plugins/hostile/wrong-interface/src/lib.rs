//! Hostile fixture: claims `moed:plugin/gating@0.1.0` with different function types.

wit_bindgen::generate!({ path: "wit", world: "gate" });

struct Wrong;

impl exports::moed::plugin::gating::Guest for Wrong {
    fn init() {}
    fn route(logits: Vec<f64>) -> Vec<u32> {
        (0..logits.len() as u32).collect()
    }
}

export!(Wrong);
