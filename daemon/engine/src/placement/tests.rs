use super::*;

const GPU: Provider = Provider::Cuda;

fn slot(kind: GraphKind, layer: Option<usize>, expert: Option<usize>, bytes: u64) -> GraphSlot {
    GraphSlot {
        kind,
        layer,
        expert,
        bytes,
    }
}

/// Embedding 100, head 5, two MoE layers each with attention 10, router 2 and `experts` experts
/// of `expert_bytes`.
fn model(experts: usize, expert_bytes: u64) -> Vec<GraphSlot> {
    let mut s = vec![
        slot(GraphKind::Embedding, None, None, 100),
        slot(GraphKind::Head, None, None, 5),
    ];
    for l in 0..2 {
        s.push(slot(GraphKind::Attention, Some(l), None, 10));
        s.push(slot(GraphKind::Router, Some(l), None, 2));
        for e in 0..experts {
            s.push(slot(GraphKind::Expert, Some(l), Some(e), expert_bytes));
        }
    }
    s
}

fn index(slots: &[GraphSlot], layer: usize, expert: usize) -> usize {
    slots
        .iter()
        .position(|s| s.layer == Some(layer) && s.expert == Some(expert))
        .expect("slot")
}

fn on_gpu(p: &Placement, slots: &[GraphSlot]) -> Vec<(usize, usize)> {
    slots
        .iter()
        .enumerate()
        .filter(|&(i, s)| s.kind == GraphKind::Expert && p.provider(i) == GPU)
        .map(|(_, s)| (s.layer.unwrap_or(0), s.expert.unwrap_or(0)))
        .collect()
}

/// The fixed graphs but the embedding: 2 × (10 + 2) + 5.
const FIXED: u64 = 29;

#[test]
fn the_budget_is_filled_exactly_hottest_experts_first() {
    let slots = model(4, 4);
    let stats = vec![vec![1, 50, 3, 0], vec![7, 0, 60, 2]];
    let p = Placement::plan(&slots, &stats, FIXED + 12, Some(GPU));
    assert_eq!(p.gpu_bytes(), FIXED + 12, "three experts fill the budget");
    let mut placed = on_gpu(&p, &slots);
    placed.sort();
    assert_eq!(placed, vec![(0, 1), (1, 0), (1, 2)]);
    let s = p.summary(&slots);
    assert_eq!(s.gpu_bytes_used, FIXED + 12);
    let total: u64 = slots.iter().map(|s| s.bytes).sum();
    assert_eq!(s.providers.iter().map(|p| p.bytes).sum::<u64>(), total);
    assert_eq!(s.providers[0].provider, GPU);
    assert_eq!(s.providers[0].bytes, FIXED + 12);
    assert_eq!(s.providers[0].experts, 3);
    assert_eq!(s.providers[1].provider, Provider::Cpu);
    assert_eq!(s.providers[1].experts, 5);
}

#[test]
fn ties_go_to_the_lower_layer_then_the_lower_expert() {
    let slots = model(3, 4);
    let stats = vec![vec![5, 5, 5], vec![5, 5, 5]];
    let p = Placement::plan(&slots, &stats, FIXED + 8, Some(GPU));
    assert_eq!(on_gpu(&p, &slots), vec![(0, 0), (0, 1)]);
    // Without any statistics every count is 0: the same order.
    let p = Placement::plan(&slots, &[], FIXED + 16, Some(GPU));
    assert_eq!(on_gpu(&p, &slots), vec![(0, 0), (0, 1), (0, 2), (1, 0)]);
}

#[test]
fn attention_routers_and_head_come_before_any_expert() {
    let slots = model(2, 4);
    let stats = vec![vec![1_000_000, 0], vec![0, 0]];
    let p = Placement::plan(&slots, &stats, FIXED, Some(GPU));
    assert_eq!(p.gpu_bytes(), FIXED);
    assert!(on_gpu(&p, &slots).is_empty());
    for (i, s) in slots.iter().enumerate() {
        let want = match s.kind {
            GraphKind::Attention | GraphKind::Router | GraphKind::Head => GPU,
            _ => Provider::Cpu,
        };
        assert_eq!(p.provider(i), want, "{s:?}");
    }
    // 12 bytes: the first layer's attention and router fill them; the second layer's
    // attention, its router and the head are passed over.
    let p = Placement::plan(&slots, &stats, 12, Some(GPU));
    assert_eq!(p.gpu_bytes(), 12);
    assert_eq!(p.provider(2), GPU, "layer 0 attention");
    assert_eq!(p.provider(1), Provider::Cpu, "head");
}

#[test]
fn zero_budget_or_no_gpu_puts_everything_on_the_cpu() {
    let slots = model(2, 4);
    for p in [
        Placement::plan(&slots, &[], 0, Some(GPU)),
        Placement::plan(&slots, &[], u64::MAX, None),
    ] {
        assert_eq!(p.gpu_bytes(), 0);
        assert!((0..slots.len()).all(|i| p.provider(i) == Provider::Cpu));
        let s = p.summary(&slots);
        assert_eq!(s.providers.len(), 1);
        assert_eq!(s.providers[0].graphs, slots.len() as u64);
    }
}

#[test]
fn a_budget_larger_than_the_model_places_all_but_the_embedding() {
    let slots = model(3, 4);
    let p = Placement::plan(&slots, &[], 1 << 40, Some(Provider::TensorRt));
    assert_eq!(p.gpu_bytes(), FIXED + 6 * 4);
    assert_eq!(p.provider(0), Provider::Cpu, "the embedding stays");
    assert!((1..slots.len()).all(|i| p.provider(i) == Provider::TensorRt));
    // A budget near u64::MAX does not overflow the sum.
    let p = Placement::plan(&slots, &[], u64::MAX, Some(GPU));
    assert_eq!(p.gpu_bytes(), FIXED + 24);
}

#[test]
fn an_expert_too_large_is_passed_over_and_smaller_ones_still_fit() {
    let mut slots = model(3, 4);
    let big = index(&slots, 0, 0);
    slots[big].bytes = 40;
    let stats = vec![vec![100, 1, 1], vec![0, 0, 0]];
    let p = Placement::plan(&slots, &stats, FIXED + 9, Some(GPU));
    assert_eq!(p.provider(big), Provider::Cpu);
    assert_eq!(on_gpu(&p, &slots), vec![(0, 1), (0, 2)]);
    assert_eq!(p.gpu_bytes(), FIXED + 8);
}

#[test]
fn all_on_one_provider_has_no_budget() {
    let slots = model(2, 4);
    let p = Placement::all(&slots, Provider::Cpu);
    let s = p.summary(&slots);
    assert_eq!(s.gpu_memory_budget, None);
    assert!(s.line().contains("no gpu_memory_budget"), "{}", s.line());
    // A graph whose session failed on the one GPU provider is on the CPU in the summary.
    let mut p = Placement::all(&slots, GPU);
    p.exclude(&slots, 2);
    let s = p.summary(&slots);
    assert_eq!(
        (s.providers[0].provider, s.providers[0].graphs),
        (GPU, slots.len() as u64 - 1)
    );
    assert_eq!(
        (s.providers[1].provider, s.providers[1].bytes),
        (Provider::Cpu, 10)
    );
    assert_eq!(s.gpu_bytes_used, 0);
}

#[test]
fn revisit_moves_nothing_when_the_statistics_agree() {
    let slots = model(4, 4);
    let stats = vec![vec![9, 8, 7, 6], vec![5, 4, 3, 2]];
    let p = Placement::plan(&slots, &stats, FIXED + 12, Some(GPU));
    assert!(revisit(&p, &slots, &stats, 8).is_empty());
    let cpu_only = Placement::plan(&slots, &stats, FIXED + 12, None);
    let hot = vec![vec![0, 0, 0, 0], vec![0, 0, 0, 1000]];
    assert!(revisit(&cpu_only, &slots, &hot, 8).is_empty());
}

#[test]
fn revisit_swaps_the_coldest_for_a_clearly_hotter_expert() {
    let slots = model(4, 4);
    let before = vec![vec![90, 80, 70, 0], vec![0, 0, 0, 0]];
    let mut p = Placement::plan(&slots, &before, FIXED + 12, Some(GPU));
    // Layer 1 expert 3 became the hottest; layer 0 expert 2 the coldest of the GPU set.
    let after = vec![vec![90, 80, 70, 0], vec![0, 0, 0, 200]];
    let moves = revisit(&p, &slots, &after, 8);
    assert_eq!(
        moves,
        vec![
            Move {
                slot: index(&slots, 0, 2),
                to: Provider::Cpu
            },
            Move {
                slot: index(&slots, 1, 3),
                to: GPU
            },
        ]
    );
    p.apply(&slots, &moves);
    assert_eq!(p.gpu_bytes(), FIXED + 12);
    assert_eq!(p, Placement::plan(&slots, &after, FIXED + 12, Some(GPU)));
    assert!(revisit(&p, &slots, &after, 8).is_empty(), "settled");
}

#[test]
fn revisit_does_not_swap_experts_of_about_equal_heat() {
    let slots = model(4, 4);
    let before = vec![vec![80, 80, 80, 79], vec![0, 0, 0, 0]];
    let p = Placement::plan(&slots, &before, FIXED + 12, Some(GPU));
    // Expert 3 overtakes expert 2 by one token: within the hysteresis, nothing moves.
    let after = vec![vec![80, 80, 80, 81], vec![0, 0, 0, 0]];
    assert!(revisit(&p, &slots, &after, 8).is_empty());
    // Clearly hotter: it moves.
    let after = vec![vec![80, 80, 80, 91], vec![0, 0, 0, 0]];
    assert_eq!(revisit(&p, &slots, &after, 8).len(), 2);
}

#[test]
fn revisit_is_bounded_per_call_and_converges() {
    let slots = model(8, 4);
    let before = vec![vec![100, 100, 100, 100, 0, 0, 0, 0], vec![0; 8]];
    let mut p = Placement::plan(&slots, &before, FIXED + 16, Some(GPU));
    let after = vec![vec![0, 0, 0, 0, 500, 500, 500, 500], vec![0; 8]];
    let mut rounds = 0;
    loop {
        let moves = revisit(&p, &slots, &after, 3);
        if moves.is_empty() {
            break;
        }
        assert!(moves.len() <= 3, "{moves:?}");
        p.apply(&slots, &moves);
        assert!(p.gpu_bytes() <= FIXED + 16);
        rounds += 1;
        assert!(rounds < 10, "revisits do not settle");
    }
    // One swap (two moves) fits in three moves per call: four calls.
    assert_eq!(rounds, 4);
    assert_eq!(on_gpu(&p, &slots), vec![(0, 4), (0, 5), (0, 6), (0, 7)]);
    assert!(revisit(&p, &slots, &after, 0).is_empty());
}

#[test]
fn an_excluded_slot_frees_its_bytes_and_is_not_promoted_again() {
    let slots = model(4, 4);
    let stats = vec![vec![9, 8, 7, 6], vec![0; 4]];
    let mut p = Placement::plan(&slots, &stats, FIXED + 8, Some(GPU));
    let failed = index(&slots, 0, 0);
    p.exclude(&slots, failed);
    assert_eq!(p.provider(failed), Provider::Cpu);
    assert_eq!(p.gpu_bytes(), FIXED + 4);
    let moves = revisit(&p, &slots, &stats, 8);
    assert_eq!(
        moves,
        vec![Move {
            slot: index(&slots, 0, 2),
            to: GPU
        }],
        "the freed bytes go to the next hottest, into free budget"
    );
}
