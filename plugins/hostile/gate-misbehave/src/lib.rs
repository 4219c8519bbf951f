//! Hostile fixture: a gate that answers correctly `after` times, then misbehaves as `mode` says
//! (the request's parameter `misbehave.mode` overrides the configuration).

use std::cell::RefCell;

use moed_plugin_sdk::gate::{Guest, ModelRouting, RouteRequest, Routing};
use moed_plugin_sdk::routing::{self, Scratch};
use moed_plugin_sdk::{alerts, config, log, param_json};

#[derive(serde::Deserialize)]
struct Config {
    mode: String,
    after: u64,
    size: usize,
}

/// A string with NUL bytes, a newline that would start a forged log line and a terminal escape,
/// `size` bytes long (roughly).
fn payload(size: usize) -> String {
    // One allocation: the plugin's memory limit must hold the string, not a doubled buffer.
    let mut s = String::with_capacity(size + 64);
    s.push_str("hostile\0payload\n[forged] log line\x1b[2J");
    // In 64 KiB copies: fast enough for a filter's time limit even at 40 MiB.
    let chunk = "x".repeat(64 << 10);
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len());
        s.push_str(&chunk[..n]);
        left -= n;
    }
    s.push_str("\0end");
    s
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
            let mode = param_json::<String>(&req.params, "misbehave.mode")?;
            let size = param_json::<usize>(&req.params, "misbehave.size")?;
            let size = size.unwrap_or(st.config.size);
            match mode.as_deref().unwrap_or(&st.config.mode) {
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
                // Finite, so it passed the old check, and overflows the engine's sums.
                "max-weight" => out.weights.iter_mut().for_each(|w| *w = f32::MAX),
                "infinite-weight" => out.weights[0] = f32::INFINITY,
                // Large but allowed (moed_plugins::gate::MAX_WEIGHT): answered as given.
                "big-weight" => out.weights.iter_mut().for_each(|w| *w = 1e4),
                "error-huge" => return Err(payload(size)),
                "stderr-huge" => {
                    eprint!("{}", payload(size));
                    panic!("gate-misbehave: deliberate panic after a huge stderr");
                }
                "alert-huge" => {
                    alerts::error(&payload(size), &payload(size));
                    log::warn(&payload(size));
                }
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
