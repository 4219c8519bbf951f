//! `expert-budget`: a gate that spends fewer experts than the model's top-k per token (faster,
//! less exact), never picks masked experts and always picks pinned ones. Configuration sets the
//! defaults; a request may override them with the parameters `expert_budget.k`,
//! `expert_budget.masked` and `expert_budget.pinned` (JSON values).

use std::cell::RefCell;
use std::collections::BTreeMap;

use moed_plugin_sdk::gate::{Guest, ModelRouting, RouteRequest, Routing};
use moed_plugin_sdk::routing::{self, Scratch};
use moed_plugin_sdk::{config, param_json};

#[derive(serde::Deserialize)]
struct Config {
    k: u32,
    masked: Vec<u32>,
    pinned: Vec<u32>,
    masked_by_layer: BTreeMap<String, Vec<u32>>,
    rescale: bool,
}

struct State {
    model: ModelRouting,
    config: Config,
    scratch: Scratch,
    all: Vec<u32>,
}

thread_local! {
    static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
}

/// `"KEY: "` when the value at fault came from the request's parameter KEY, so moed can tell
/// the client's mistake (the request fails, naming the key) from the plugin's configuration.
fn from_request(given: bool, key: &str) -> String {
    if given {
        format!("{key}: ")
    } else {
        String::new()
    }
}

/// The budget for one call: configuration overridden by the request.
struct Budget {
    k: usize,
    masked: Vec<bool>,
    pinned: Vec<u32>,
}

fn budget(st: &State, req: &RouteRequest) -> Result<Budget, String> {
    let e = st.model.num_experts as usize;
    let top_k = st.model.top_k as usize;
    let k = param_json::<u32>(&req.params, "expert_budget.k")?.unwrap_or(st.config.k) as usize;
    let k = if k == 0 { top_k } else { k };
    if k > top_k {
        return Err(format!(
            "expert_budget.k = {k} is more than the model's top-{top_k}"
        ));
    }
    let mut masked = vec![false; e];
    let req_masked = param_json::<Vec<u32>>(&req.params, "expert_budget.masked")?;
    let layer_masked = st.config.masked_by_layer.get(&req.layer.to_string());
    let listed = req_masked.as_deref().unwrap_or(&st.config.masked).iter();
    let listed = listed.map(|&x| (x, req_masked.is_some()));
    for (x, by_request) in listed.chain(layer_masked.into_iter().flatten().map(|&x| (x, false))) {
        *masked.get_mut(x as usize).ok_or_else(|| {
            format!(
                "{}masked expert {x} does not exist (the model has {e})",
                from_request(by_request, "expert_budget.masked")
            )
        })? = true;
    }
    let req_pinned = param_json::<Vec<u32>>(&req.params, "expert_budget.pinned")?;
    let by_request = req_pinned.is_some();
    let pinned_named = || from_request(by_request, "expert_budget.pinned");
    let pinned = req_pinned.unwrap_or_else(|| st.config.pinned.clone());
    for &x in &pinned {
        if x as usize >= e {
            return Err(format!(
                "{}pinned expert {x} does not exist (the model has {e})",
                pinned_named()
            ));
        }
        if masked[x as usize] {
            return Err(format!(
                "{}expert {x} is both pinned and masked",
                pinned_named()
            ));
        }
    }
    if masked.iter().filter(|m| !**m).count() < k {
        return Err(format!(
            "{}the masks leave fewer than {k} experts",
            from_request(req_masked.is_some(), "expert_budget.masked")
        ));
    }
    Ok(Budget { k, masked, pinned })
}

struct ExpertBudget;

impl Guest for ExpertBudget {
    fn init(model: ModelRouting) -> Result<(), String> {
        routing::check_model(&model)?;
        let config: Config = config::get()?;
        if config.k > model.top_k {
            return Err(format!(
                "k = {} is more than the model's top-{}",
                config.k, model.top_k
            ));
        }
        let scratch = Scratch::new(&model);
        let all = Vec::with_capacity(model.num_experts as usize);
        STATE.with_borrow_mut(|s| {
            *s = Some(State {
                model,
                config,
                scratch,
                all,
            })
        });
        Ok(())
    }

    fn route(req: RouteRequest) -> Result<Routing, String> {
        STATE.with_borrow_mut(|state| {
            let st = state.as_mut().ok_or("route called before init")?;
            routing::check_request(
                &st.model,
                req.layer,
                req.num_tokens,
                req.num_experts,
                req.logits.len(),
            )?;
            let b = budget(st, &req)?;
            let State {
                model,
                config,
                scratch: s,
                all,
            } = st;
            let e = model.num_experts as usize;
            let bias = model
                .correction_bias
                .get(req.layer as usize)
                .and_then(|b| b.as_deref());
            let mut out = Routing {
                k: b.k as u32,
                experts: Vec::with_capacity(req.num_tokens as usize * b.k),
                weights: Vec::with_capacity(req.num_tokens as usize * b.k),
            };
            for row in req.logits.chunks_exact(e) {
                routing::scores_and_choice(model, bias, row, s);
                // The model's own choice, for the weight mass to keep.
                let native_mass = if config.rescale {
                    routing::top_k_into(&s.choice, model.top_k as usize, &mut s.order);
                    s.chosen.clone_from(&s.order);
                    routing::weights(model, s);
                    s.chosen_w.iter().sum::<f32>()
                } else {
                    0.0
                };
                // Every expert by choice, best first; pinned ones first, masked ones never.
                routing::top_k_into(&s.choice, e, all);
                s.chosen.clear();
                for &x in &b.pinned {
                    if s.chosen.len() < b.k && !s.chosen.contains(&x) {
                        s.chosen.push(x);
                    }
                }
                for &x in all.iter() {
                    if s.chosen.len() == b.k {
                        break;
                    }
                    if !b.masked[x as usize] && !s.chosen.contains(&x) {
                        s.chosen.push(x);
                    }
                }
                routing::weights(model, s);
                if config.rescale {
                    let mass: f32 = s.chosen_w.iter().sum();
                    if mass > 0.0 && native_mass.is_finite() {
                        let f = native_mass / mass;
                        for w in s.chosen_w.iter_mut() {
                            *w *= f;
                        }
                    }
                }
                out.experts.extend_from_slice(&s.chosen);
                out.weights.extend_from_slice(&s.chosen_w);
            }
            Ok(out)
        })
    }
}

moed_plugin_sdk::export_gate!(ExpertBudget);
