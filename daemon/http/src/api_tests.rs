use super::*;

#[test]
fn tokens_compare_whole() {
    assert!(same(b"secret", b"secret"));
    assert!(!same(b"secret", b"secreT"));
    assert!(!same(b"secret", b"secret2"));
    assert!(!same(b"", b"x"));
}

fn shape() -> Shape {
    Shape {
        id: "chatcmpl-7".into(),
        created: 1,
        model: "m".into(),
        kind: Kind::Chat,
    }
}

fn called(text: &str) -> moed_dbus::GenerationInfo {
    moed_dbus::GenerationInfo {
        finish_reason: "tool_calls".into(),
        text: text.into(),
        tool_calls: Some(
            r#"[{"id":"call_7_0","type":"function","function":{"name":"get_weather","arguments":"{\"city\": \"Paris\"}"}}]"#
                .into(),
        ),
        completion_tokens: 9,
        ..Default::default()
    }
}

fn events(list: Vec<Event>) -> tokio::sync::mpsc::UnboundedReceiver<Event> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    for e in list {
        tx.send(e).expect("open");
    }
    rx
}

#[tokio::test]
async fn a_whole_answer_carries_the_calls() {
    let answer = whole(shape(), events(vec![Event::Done(called(""))]))
        .await
        .expect("answer");
    let choice = &answer["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(
        choice["message"],
        json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_7_0", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}
        ]})
    );
    // Text the model wrote besides the call stays content.
    let answer = whole(shape(), events(vec![Event::Done(called("Let me look."))]))
        .await
        .expect("answer");
    assert_eq!(answer["choices"][0]["message"]["content"], "Let me look.");
    assert_eq!(
        answer["choices"][0]["message"]["tool_calls"][0]["id"],
        "call_7_0"
    );
    // No calls: no tool_calls key, content a string even when empty.
    let plain = moed_dbus::GenerationInfo {
        finish_reason: "eos".into(),
        ..Default::default()
    };
    let answer = whole(shape(), events(vec![Event::Done(plain)]))
        .await
        .expect("answer");
    assert_eq!(
        answer["choices"][0]["message"],
        json!({"role": "assistant", "content": ""})
    );
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    // Calls moed wrote in another shape are its failure, not the client's.
    let mut bad = called("");
    bad.tool_calls = Some("[{\"id\": 5}]".into());
    let err = whole(shape(), events(vec![Event::Done(bad)]))
        .await
        .expect_err("refused");
    assert_eq!(err.status, StatusCode::INTERNAL_SERVER_ERROR);
}

async fn read_chunks(response: Response) -> Vec<Value> {
    use http_body_util::BodyExt;
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let text = String::from_utf8(body.to_vec()).expect("UTF-8");
    let events: Vec<&str> = text
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| e.strip_prefix("data: ").expect("a data event"))
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"), "{text}");
    events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).expect("JSON"))
        .collect()
}

#[tokio::test]
async fn a_stream_sends_the_calls_before_the_finish() {
    let list = vec![
        Event::Token {
            text: "Let me look.".into(),
            thinking: false,
        },
        Event::Done(called("Let me look.")),
    ];
    let chunks = read_chunks(stream(shape(), events(list), true)).await;
    let deltas: Vec<&Value> = chunks.iter().map(|c| &c["choices"][0]["delta"]).collect();
    assert_eq!(chunks.len(), 4, "{chunks:?}");
    assert_eq!(
        deltas[0],
        &json!({"role": "assistant", "content": "Let me look."})
    );
    assert_eq!(
        deltas[1],
        &json!({"tool_calls": [{"index": 0, "id": "call_7_0", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]})
    );
    assert!(chunks[1]["choices"][0]["finish_reason"].is_null());
    assert_eq!(chunks[2]["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(deltas[2], &json!({}));
    assert_eq!(chunks[3]["usage"]["completion_tokens"], 9);
    // Only a call: the role comes first, then the call.
    let chunks = read_chunks(stream(
        shape(),
        events(vec![Event::Done(called(""))]),
        false,
    ))
    .await;
    assert_eq!(chunks.len(), 3, "{chunks:?}");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(
        chunks[1]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );
    assert_eq!(chunks[2]["choices"][0]["finish_reason"], "tool_calls");
}
