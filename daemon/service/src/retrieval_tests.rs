//! Tests of retrieval.rs: the query, the template, the budget, cutting, placement.

use super::*;

fn doc(id: &str, source: &str, text: &str, score: f32) -> Document {
    Document {
        id: id.into(),
        source: source.into(),
        text: text.into(),
        score,
    }
}

/// Words of the whole conversation, as a stand-in tokenizer.
fn words(p: &Prompt) -> Result<usize, String> {
    Ok(match p {
        Prompt::Raw(t) => t.split_whitespace().count(),
        Prompt::Chat(m) => m
            .iter()
            .map(|m| 1 + m.content.split_whitespace().count())
            .sum(),
    })
}

fn chat(messages: &[(&str, &str)]) -> Prompt {
    Prompt::Chat(
        messages
            .iter()
            .map(|(r, c)| ChatMessage::new(r, c))
            .collect(),
    )
}

fn docs() -> Vec<Document> {
    vec![
        doc(
            "1",
            "handbook.md",
            "Every employee has 25 vacation days.",
            3.0,
        ),
        doc(
            "7",
            "policy.md",
            "Unused vacation days expire at the end of March next year.",
            2.0,
        ),
        doc(
            "9",
            "misc.md",
            "The office closes at six in the evening.",
            0.5,
        ),
    ]
}

#[test]
fn the_query_is_the_raw_prompt_or_the_last_user_message() {
    assert_eq!(
        query_of(&Prompt::Raw("days off?".into())),
        Some("days off?")
    );
    let p = chat(&[
        ("system", "Be brief."),
        ("user", "first"),
        ("assistant", "ok"),
        ("user", "how many vacation days"),
    ]);
    assert_eq!(query_of(&p), Some("how many vacation days"));
    assert_eq!(query_of(&chat(&[("system", "x")])), None);
    assert_eq!(query_of(&Prompt::Raw("  ".into())), None);
}

#[test]
fn passages_become_a_system_message_with_their_sources() {
    let mut p = chat(&[("user", "How many vacation days do I have?")]);
    let budget = Budget {
        passage_tokens: 1000,
        prompt_tokens: 1000,
    };
    let a = assemble(&mut p, &docs(), budget, &mut words).expect("assemble");
    assert_eq!(a.used.len(), 3);
    assert_eq!(a.placement, Some(Placement::System));
    let Prompt::Chat(m) = &p else { panic!("chat") };
    assert_eq!(m.len(), 2);
    assert_eq!(m[0].role, "system");
    assert!(m[0].content.contains("[1] source: handbook.md (id 1)"));
    assert!(m[0].content.contains("25 vacation days"));
    assert_eq!(m[1].content, "How many vacation days do I have?");
    assert_eq!(a.prompt_tokens, words(&p).expect("count"));
    // An existing system message keeps its text after the passages.
    let mut p = chat(&[("system", "Be brief."), ("user", "days?")]);
    assemble(&mut p, &docs()[..1], budget, &mut words).expect("assemble");
    let Prompt::Chat(m) = &p else { panic!("chat") };
    assert_eq!(m.len(), 2);
    assert!(m[0].content.starts_with("Answer with the help"));
    assert!(m[0].content.ends_with("\nBe brief."), "{}", m[0].content);
}

#[test]
fn the_budget_drops_the_lowest_scored_passages_first() {
    let question = "How many vacation days do I have?";
    let base = words(&chat(&[("user", question)])).expect("count");
    let all = words(&with_passages(
        &chat(&[("user", question)]),
        &docs(),
        Placement::System,
    ))
    .expect("count");
    let two = words(&with_passages(
        &chat(&[("user", question)]),
        &docs()[..2],
        Placement::System,
    ))
    .expect("count");
    let mut p = chat(&[("user", question)]);
    let a = assemble(
        &mut p,
        &docs(),
        Budget {
            passage_tokens: all - base - 1,
            prompt_tokens: 10_000,
        },
        &mut words,
    )
    .expect("assemble");
    assert_eq!(
        a.used.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        ["1", "7"]
    );
    assert_eq!(a.prompt_tokens, two);
    // The prompt's own limit (context less room for the answer) counts too.
    let mut p = chat(&[("user", question)]);
    let a = assemble(
        &mut p,
        &docs(),
        Budget {
            passage_tokens: 10_000,
            prompt_tokens: two - 1,
        },
        &mut words,
    )
    .expect("assemble");
    assert_eq!(a.used.len(), 1);
    assert!(a.prompt_tokens < two);
}

#[test]
fn a_long_best_passage_is_cut_and_the_user_text_never() {
    let long = doc("3", "manual.md", &"word ".repeat(500), 5.0);
    let question = "Tell me everything in the manual, please.";
    let mut p = Prompt::Raw(question.into());
    let a = assemble(
        &mut p,
        &[long],
        Budget {
            passage_tokens: 40,
            prompt_tokens: 1000,
        },
        &mut words,
    )
    .expect("assemble");
    assert_eq!(a.used.len(), 1);
    assert!(a.used[0].text.ends_with(" …"));
    let Prompt::Raw(text) = &p else { panic!("raw") };
    assert!(text.ends_with(question), "{text}");
    let n = words(&p).expect("count");
    assert_eq!(n, a.prompt_tokens);
    assert!(n <= words(&Prompt::Raw(question.into())).expect("count") + 40);
    // Nothing fits: the prompt stays as it was.
    let mut p = Prompt::Raw(question.into());
    let a = assemble(
        &mut p,
        &docs(),
        Budget {
            passage_tokens: 3,
            prompt_tokens: 1000,
        },
        &mut words,
    )
    .expect("assemble");
    assert!(a.used.is_empty());
    assert_eq!(p, Prompt::Raw(question.into()));
}

#[test]
fn a_template_without_system_messages_gets_the_passages_in_the_user_turn() {
    let mut no_system = |p: &Prompt| -> Result<usize, String> {
        match p {
            Prompt::Chat(m) if m.iter().any(|m| m.role == "system") => {
                Err("system role not supported".into())
            }
            other => words(other),
        }
    };
    let mut p = chat(&[("user", "days?")]);
    let a = assemble(
        &mut p,
        &docs(),
        Budget {
            passage_tokens: 1000,
            prompt_tokens: 1000,
        },
        &mut no_system,
    )
    .expect("assemble");
    assert_eq!(a.placement, Some(Placement::UserPrefix));
    let Prompt::Chat(m) = &p else { panic!("chat") };
    assert_eq!(m.len(), 1);
    assert!(m[0].content.starts_with("Answer with the help"));
    assert!(m[0].content.ends_with("\ndays?"));
}

#[test]
fn sources_become_a_parameter() {
    let params = vec![("expert_budget.k".to_string(), "1".to_string())];
    let p = retrieval_params(&params, &["handbook".into(), "wiki".into()]);
    assert_eq!(
        p,
        [
            ("expert_budget.k".to_string(), "1".to_string()),
            (
                SOURCES_PARAM.to_string(),
                "[\"handbook\",\"wiki\"]".to_string()
            ),
        ]
    );
    assert_eq!(retrieval_params(&params, &[]), params);
}
