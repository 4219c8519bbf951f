use super::*;

#[test]
fn the_first_usable_gpu_provider_is_taken_and_the_reasons_kept_otherwise() {
    let none = |_| None;
    let cpu_only = |p: Provider| Some(format!("no {p} in this build"));
    assert_eq!(
        gpu_provider(&[Provider::TensorRt, Provider::Cuda], none),
        (Some(Provider::TensorRt), None)
    );
    let trt_missing = |p: Provider| (p == Provider::TensorRt).then(|| "no libnvinfer".into());
    assert_eq!(
        gpu_provider(&[Provider::TensorRt, Provider::Cuda], trt_missing).0,
        Some(Provider::Cuda)
    );
    let (gpu, why) = gpu_provider(&[Provider::Cuda, Provider::Cpu], cpu_only);
    assert_eq!(gpu, None);
    assert_eq!(why.as_deref(), Some("cuda: no cuda in this build"));
    let (gpu, why) = gpu_provider(&[Provider::Cpu], none);
    assert_eq!(gpu, None);
    assert!(why.is_some_and(|w| w.contains("names no GPU provider")));
}

/// A layer's attention (10 bytes) and `experts` experts of 4 bytes, placed on CUDA.
fn on_cuda(experts: usize, budget: u64) -> Placed {
    let mut slots = vec![GraphSlot {
        kind: GraphKind::Attention,
        layer: Some(0),
        expert: None,
        bytes: 10,
    }];
    slots.extend((0..experts).map(|e| GraphSlot {
        kind: GraphKind::Expert,
        layer: Some(0),
        expert: Some(e),
        bytes: 4,
    }));
    let placement = Placement::plan(&slots, &[], budget, Some(Provider::Cuda));
    let fixed = HashMap::from([((GraphKind::Attention, Some(0)), 0)]);
    Placed::new(slots, fixed, vec![(1..=experts).collect()], placement, None)
}

fn no_session(p: Provider) -> EngineError {
    EngineError::Load {
        file: "attn.onnx".into(),
        message: format!("{p}: CUDA failure 100: no CUDA-capable device is detected"),
    }
}

#[test]
fn a_failed_gpu_session_falls_back_to_the_cpu_named_and_counted() {
    let placed = on_cuda(1, 14);
    assert_eq!(placed.uses_gpu(), Some(Provider::Cuda));
    let mut tried = Vec::new();
    let (_, provider) = placed
        .load(Some(0), "attn.onnx", |p| {
            tried.push(p);
            if p == Provider::Cpu {
                Ok(())
            } else {
                Err(no_session(p))
            }
        })
        .expect("on the CPU");
    assert_eq!(provider, Provider::Cpu);
    assert_eq!(tried, vec![Provider::Cuda, Provider::Cpu]);
    let s = placed.summary();
    assert_eq!(s.fallbacks, 1);
    let first = s.first_fallback.clone().unwrap_or_default();
    assert!(
        first.starts_with("attn.onnx on cuda: ") && first.contains("no CUDA-capable device"),
        "{first}"
    );
    assert_eq!(s.gpu_bytes_used, 4, "the attention's bytes left the budget");
    assert_eq!(placed.provider(Some(0)), Provider::Cpu);
    assert!(
        s.line().contains("1 graph(s) fell back to cpu"),
        "{}",
        s.line()
    );
}

#[test]
fn a_broken_graph_is_not_a_provider_failure() {
    let placed = on_cuda(1, 14);
    let err = placed
        .load(Some(1), "experts/0.onnx", |_| -> Result<(), _> {
            Err(EngineError::Interface {
                file: "experts/0.onnx".into(),
                message: "the graph has no input `x`".into(),
            })
        })
        .expect_err("the package's fault");
    assert!(matches!(err, EngineError::Interface { .. }));
    assert_eq!(placed.summary().fallbacks, 0);
}

#[test]
fn revisits_move_the_experts_they_name() {
    // Room for one expert: the first, as long as there are no statistics.
    let placed = on_cuda(2, 14);
    assert_eq!(placed.provider(placed.expert_slot(0, 0)), Provider::Cuda);
    assert_eq!(placed.revisit(&[vec![0, 100]]), vec![(0, 0), (0, 1)]);
    assert_eq!(placed.provider(placed.expert_slot(0, 1)), Provider::Cuda);
    assert_eq!(placed.provider(placed.expert_slot(0, 0)), Provider::Cpu);
    assert!(placed.revisit(&[vec![0, 100]]).is_empty(), "settled");
    assert_eq!(placed.summary().gpu_bytes_used, 14);
    assert_eq!(placed.expert_slot(0, 0), Some(1));
    assert_eq!(placed.fixed_slot(GraphKind::Attention, Some(0)), Some(0));
    assert_eq!(placed.expert_slot(1, 0), None);
}
