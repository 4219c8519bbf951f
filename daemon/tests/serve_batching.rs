//! Continuous batching through the daemon: concurrent streaming requests, configured to share
//! steps of up to four sequences and 16 new tokens (so the long prompt runs in chunks beside the
//! others' decodes), each get the tokens they get alone.

mod serve_util;

use moed_dbus::GenerateOptions;
use moed_dbus::client::{self, RequestEvent};
use serve_util::*;

fn greedy(seed: u64) -> GenerateOptions {
    GenerateOptions {
        max_tokens: Some(20),
        temperature: Some(0.0),
        seed: Some(seed),
        ignore_eos: true,
        ..GenerateOptions::default()
    }
}

async fn token_ids(address: String, prompt: String) -> Vec<u32> {
    let conn = zbus::connection::Builder::address(address.as_str())
        .build()
        .await
        .expect("connect");
    let mut stream = client::generate(&conn, &prompt, &greedy(1))
        .await
        .expect("Generate");
    while let Some(event) = stream.next().await {
        if let RequestEvent::Finished { reason, info } = event.expect("event") {
            assert_eq!(reason, "max_tokens", "{prompt}");
            return info.token_ids;
        }
    }
    panic!("no Finished for {prompt:?}");
}

async fn concurrent_streams_get_their_own_tokens(model: &str) {
    let bus = TestBus::start();
    let mut setup = DaemonSetup::with_models(&[model]);
    setup.default_name = model.to_string();
    let _daemon = Daemon::start(
        &bus,
        &setup,
        "max_concurrent = 4\nmax_batch = 4\nmax_batch_tokens = 16",
    )
    .await;
    let long = "the quick brown fox jumps over the lazy dog again and again ".repeat(6);
    let prompts: Vec<String> = vec![
        "Count to ten".into(),
        long,
        "Name a colour".into(),
        "Hello".into(),
    ];
    let mut alone = Vec::new();
    for p in &prompts {
        alone.push(token_ids(bus.address.clone(), p.clone()).await);
    }
    for round in 0..2 {
        let tasks: Vec<_> = prompts
            .iter()
            .map(|p| tokio::spawn(token_ids(bus.address.clone(), p.clone())))
            .collect();
        for (i, task) in tasks.into_iter().enumerate() {
            let got = task.await.expect("task");
            assert_eq!(got, alone[i], "{model}: round {round}, prompt {i}");
        }
    }
}

/// MLA attention: run per sequence inside the shared step.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_streams_on_mla_each_get_their_own_tokens() {
    concurrent_streams_get_their_own_tokens("deepseek_v3").await;
}

/// Grouped-query attention on moed's kernel: one run for the whole step.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_streams_with_batched_attention_each_get_their_own_tokens() {
    concurrent_streams_get_their_own_tokens("qwen3_moe").await;
}
