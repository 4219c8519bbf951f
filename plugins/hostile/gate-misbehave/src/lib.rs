//! Hostile fixture: a gate that answers correctly `after` times, then misbehaves as `mode` says.

use std::cell::RefCell;

use moed_plugin_sdk::config;
use moed_plugin_sdk::gate::{Guest, ModelRouting, RouteRequest, Routing};
use moed_plugin_sdk::routing::{self, Scratch};

#[derive(serde::Deserialize)]
struct Config {
    mode: String,
    after: u64,
}

struct State {
    model: ModelRouting,
    scratch: Scratch,
    config: Config,
    calls: u64,
}

thread_local! {
    static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
}

fn spin() -> ! {
    let mut x = 0u64;
    loop {
        x = std::hint::black_box(x.wrapping_add(1));
    }
}

struct Misbehave;

impl Guest for Misbehave {
    fn init(model: ModelRouting) -> Result<(), String> {
        let config: Config = config::get()?;
        if config.mode == "loop-init" {
            spin();
        }
        let scratch = Scratch::new(&model);
        STATE.with_borrow_mut(|s| {
            *s = Some(State {
                model,
                scratch,
                config,
                calls: 0,
            })
        });
        Ok(())
    }

    fn route(req: RouteRequest) -> Result<Routing, String> {
        STATE.with_borrow_mut(|state| {
            let st = state.as_mut().ok_or("route before init")?;
            let e = st.model.num_experts as usize;
            let k = st.model.top_k as usize;
            let bias = st
                .model
                .correction_bias
                .get(req.layer as usize)
                .and_then(|b| b.as_deref());
            let mut out = Routing {
                k: k as u32,
                experts: Vec::new(),
                weights: Vec::new(),
            };
            for row in req.logits.chunks_exact(e) {
                routing::route_token(&st.model, bias, row, &mut st.scratch);
                out.experts.extend_from_slice(&st.scratch.chosen);
                out.weights.extend_from_slice(&st.scratch.chosen_w);
            }
            st.calls += 1;
            if st.calls <= st.config.after {
                return Ok(out);
            }
            match st.config.mode.as_str() {
                "loop" => spin(),
                "membomb" => {
                    let mut hoard: Vec<Vec<u8>> = Vec::new();
                    loop {
                        hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
                    }
                }
                "out-of-range" => out.experts[0] = e as u32 + 3,
                "duplicate" => {
                    if k > 1 {
                        out.experts[1] = out.experts[0];
                    }
                }
                "nan" => out.weights[0] = f32::NAN,
                "negative" => out.weights[0] = -0.5,
                "wrong-count" => {
                    out.experts.pop();
                }
                "fewer" => {
                    out.k = (k - 1).max(1) as u32;
                    let keep = out.k as usize;
                    out.experts = out
                        .experts
                        .chunks(k)
                        .flat_map(|r| r[..keep].to_vec())
                        .collect();
                    out.weights = out
                        .weights
                        .chunks(k)
                        .flat_map(|r| r[..keep].to_vec())
                        .collect();
                }
                "trap" => panic!("gate-misbehave: deliberate panic in route"),
                "exit" => std::process::exit(3),
                "error" => return Err("gate-misbehave: deliberate error".into()),
                other => return Err(format!("unknown mode {other}")),
            }
            Ok(out)
        })
    }
}

moed_plugin_sdk::export_gate!(Misbehave);
