//! Hostile fixture: built against `moed:plugin@0.9.0`, which this host does not link.

wit_bindgen::generate!({ path: "wit", world: "gate" });

use exports::moed::plugin::gating::{Guest, Routing};

struct Future;

impl Guest for Future {
    fn route(_layer: u32, _logits: Vec<f32>) -> Result<Routing, String> {
        Err("never called".into())
    }
}

export!(Future);
