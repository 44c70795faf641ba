//! Issue 19: a prompt or messages too large for one environment variable (Linux's 128 KiB per
//! string) run from the operator's input ConfigMap, end to end on the real node: the pod starts
//! (no `E2BIG`), the runner reads the file, and the request carries the whole text.

mod common;

use common::*;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use llmjob_crds::v1alpha1::Phase;
use llmjob_operator::input;
use openai_replay::ReplayConfig;

/// The text of the user messages the replay server received, in order.
fn user_contents(replay: &Replay) -> Vec<String> {
    replay
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/chat/completions"))
        .filter_map(|r| r.body.as_ref()?.get("messages")?.as_array().cloned())
        .flatten()
        .filter(|m| m["role"] == "user")
        .filter_map(|m| m["content"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn prompts_and_messages_over_128_kib_run_from_the_input_config_map() {
    let env = env().await;
    let ns = namespace_with_secret(env, "large").await;
    let replay = Replay::start(env, &ns, ReplayConfig::new().with_api_key(API_KEY)).await;
    let _op = Operator::start(env, &ns, &[]).await;

    // 65,536 two-byte characters: 128 KiB, over the limit with the variable's name.
    let prompt = "é".repeat(65_536);
    let mut big_prompt = llmjob_json("big-prompt", &replay.base_url());
    big_prompt["spec"]["prompt"] = prompt.clone().into();
    // Three messages of 50,000 characters: 150 KB of JSON.
    let contents: Vec<String> = (0..3)
        .map(|i| format!("{i}{}", "m".repeat(49_999)))
        .collect();
    let mut big_chat = llmjob_json("big-chat", &replay.base_url());
    let spec = big_chat["spec"].as_object_mut().expect("spec");
    spec.remove("prompt");
    spec.insert(
        "messages".into(),
        contents
            .iter()
            .map(|c| serde_json::json!({"role": "user", "content": c}))
            .collect(),
    );
    create_llmjob(env, &ns, big_prompt).await;
    create_llmjob(env, &ns, big_chat).await;

    for (name, key, var) in [
        ("big-prompt", input::PROMPT_KEY, "OPENAI_PROMPT_FILE"),
        ("big-chat", input::MESSAGES_KEY, "LLMJOB_MESSAGES_FILE"),
    ] {
        let done = wait_for_phase(env, &ns, name, Phase::Succeeded).await;
        let config_map = Api::<ConfigMap>::namespaced(env.client(), &ns)
            .get(&input::config_map_name(name))
            .await
            .expect("the input ConfigMap");
        assert!(
            config_map
                .data
                .as_ref()
                .is_some_and(|d| d.contains_key(key)),
            "{name}: key {key} in {:?}",
            config_map
                .data
                .as_ref()
                .map(|d| d.keys().collect::<Vec<_>>())
        );
        assert_eq!(config_map.immutable, Some(true));
        let owner = &config_map
            .metadata
            .owner_references
            .as_ref()
            .expect("owner")[0];
        assert_eq!(
            Some(owner.uid.as_str()),
            done.metadata.uid.as_deref(),
            "{name}: owned by its LlmJob"
        );
        let job = Api::<Job>::namespaced(env.client(), &ns)
            .get(name)
            .await
            .expect("the Job");
        let env_vars = job
            .spec
            .and_then(|s| s.template.spec)
            .map(|p| p.containers[0].env.clone().unwrap_or_default())
            .unwrap_or_default();
        assert!(env_vars.iter().any(|e| e.name == var), "{name}: {var} set");
        assert!(
            env_vars
                .iter()
                .all(|e| e.name != "OPENAI_PROMPT" && e.name != "LLMJOB_MESSAGES"),
            "{name}: the text is not in the environment"
        );
    }
    let received = user_contents(&replay);
    assert!(
        received.contains(&prompt),
        "the whole prompt reached the API"
    );
    for c in &contents {
        assert!(received.contains(c), "every message reached the API");
    }
    // A small prompt in the same namespace keeps its variable and gets no ConfigMap.
    create_llmjob(env, &ns, llmjob_json("small", &replay.base_url())).await;
    wait_for_phase(env, &ns, "small", Phase::Succeeded).await;
    let none = Api::<ConfigMap>::namespaced(env.client(), &ns)
        .get_opt(&input::config_map_name("small"))
        .await
        .expect("reading ConfigMaps");
    assert!(none.is_none(), "no input ConfigMap for a small prompt");
}
