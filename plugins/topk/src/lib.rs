//! `topk`: the architectures' native routing rule as a gate plugin, deciding bit-identically to the
//! engine's native gate (the reference for other gate plugins and the overhead benchmark).

use std::cell::RefCell;

use moed_plugin_sdk::gate::{Guest, ModelRouting, RouteRequest, Routing};
use moed_plugin_sdk::routing::{self, Scratch};

struct State {
    model: ModelRouting,
    scratch: Scratch,
}

thread_local! {
    static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
}

struct TopK;

impl Guest for TopK {
    fn init(model: ModelRouting) -> Result<(), String> {
        routing::check_model(&model)?;
        let scratch = Scratch::new(&model);
        STATE.with_borrow_mut(|s| *s = Some(State { model, scratch }));
        Ok(())
    }

    fn route(req: RouteRequest) -> Result<Routing, String> {
        STATE.with_borrow_mut(|state| {
            let State { model, scratch } = state.as_mut().ok_or("route called before init")?;
            routing::check_request(
                model,
                req.layer,
                req.num_tokens,
                req.num_experts,
                req.logits.len(),
            )?;
            if req.top_k != model.top_k {
                return Err(format!(
                    "asked for top-{}, the model routes top-{}",
                    req.top_k, model.top_k
                ));
            }
            let (e, k) = (model.num_experts as usize, model.top_k as usize);
            let bias = model
                .correction_bias
                .get(req.layer as usize)
                .and_then(|b| b.as_deref());
            let mut out = Routing {
                k: model.top_k,
                experts: Vec::with_capacity(req.num_tokens as usize * k),
                weights: Vec::with_capacity(req.num_tokens as usize * k),
            };
            for row in req.logits.chunks_exact(e) {
                routing::route_token(model, bias, row, scratch);
                out.experts.extend_from_slice(&scratch.chosen);
                out.weights.extend_from_slice(&scratch.chosen_w);
            }
            Ok(out)
        })
    }
}

moed_plugin_sdk::export_gate!(TopK);
