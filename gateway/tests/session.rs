//! The session half of the gateway against real upstream servers: the
//! official Python SDK fixture (gateway/tests/fixtures/pyserver.py) and
//! `@modelcontextprotocol/server-everything`, both installed by
//! `scripts/gateway-deps.sh` (missing servers fail these tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use aivault_gateway::hooks::{
    namespaced, CallInfo, Decision, Filtered, Policy, Refusal, VisibleTool,
};
use aivault_gateway::jsonrpc;
use common::*;
use serde_json::{json, Value};

fn two_upstreams(py_env: &[(&str, &str)]) -> ProcessSpawner {
    let mut s = ProcessSpawner::default();
    s.servers.insert("py".into(), python_server(py_env));
    s.servers.insert("every".into(), everything_server());
    s
}

fn tool_names(list: &Value) -> Vec<String> {
    list["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no tools in {}", truncate(list)))
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_of_two_upstreams_are_listed_namespaced_and_calls_routed() {
    let mut agent = Agent::start(
        config(&["py", "every"]),
        two_upstreams(&[("FIXTURE_MARK", "from-py")]),
    );
    let init = agent.initialize().await;
    assert_eq!(init["result"]["protocolVersion"], "2025-06-18");
    let names = tool_names(&agent.request(json!(1), "tools/list", json!({})).await);
    for want in [
        "py__slow",
        "py__big",
        "py__echo_env",
        "every__echo",
        "every__get-sum",
    ] {
        assert!(names.contains(&want.to_string()), "{want} not in {names:?}");
    }
    let first = |prefix: &str| names.iter().position(|n| n.starts_with(prefix)).unwrap();
    assert!(
        first("py__") < first("every__"),
        "listed in the servers' order: {names:?}"
    );
    assert!(
        !names.iter().any(|n| n == "echo" || n == "slow"),
        "un-namespaced names leak: {names:?}"
    );

    assert_eq!(
        text(
            &agent
                .call(json!(2), "every__echo", json!({"message": "hi there"}))
                .await
        ),
        "Echo: hi there"
    );
    assert!(text(
        &agent
            .call(json!(3), "every__get-sum", json!({"a": 2, "b": 3}))
            .await
    )
    .contains('5'));
    assert_eq!(
        text(
            &agent
                .call(json!(4), "py__echo_env", json!({"name": "FIXTURE_MARK"}))
                .await
        ),
        "from-py"
    );

    let records = agent.audit.all();
    assert_eq!(records.len(), 3, "{records:?}");
    let r = &records[2];
    assert_eq!(r.caller, "agent-uid-1000");
    assert_eq!(
        (r.server.as_deref(), r.tool.as_str(), r.exposed.as_str()),
        (Some("py"), "echo_env", "py__echo_env")
    );
    assert_eq!(r.decision, Decision::Allowed);
    assert_eq!(r.argument_digest, digest(&json!({"name": "FIXTURE_MARK"})));
    assert!(r.request_bytes > 0 && r.response_bytes > 0);
    agent.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstreams_start_on_first_use_not_before() {
    let spawner = two_upstreams(&[]);
    let starts = spawner.starts.clone();
    let count = || starts.load(std::sync::atomic::Ordering::Relaxed);
    let mut agent = Agent::start(config(&["py", "every"]), spawner);
    agent.initialize().await;
    assert_eq!(
        agent.request(json!(1), "ping", json!({})).await["result"],
        json!({})
    );
    assert_eq!(count(), 0, "started before any use");
    // A call before any listing lists (and so starts) every upstream once.
    agent.call(json!(2), "py__pid", json!({})).await;
    assert_eq!(count(), 2);
    agent
        .call(json!(3), "every__echo", json!({"message": "m"}))
        .await;
    agent.request(json!(4), "tools/list", json!({})).await;
    assert_eq!(count(), 2, "a live upstream is reused");
    agent.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_tool_list_is_passed_on_and_listed_afresh() {
    let mut agent = Agent::start(config(&["py"]), two_upstreams(&[]));
    let init = agent.initialize().await;
    assert_eq!(init["result"]["capabilities"]["tools"]["listChanged"], true);
    let before = tool_names(&agent.request(json!(1), "tools/list", json!({})).await);
    assert!(!before.contains(&"py__extra".to_string()));
    assert_eq!(
        text(&agent.call(json!(2), "py__grow", json!({})).await),
        "grown"
    );
    let note = agent.next_notification().await;
    assert_eq!(note["method"], "notifications/tools/list_changed", "{note}");
    let after = tool_names(&agent.request(json!(3), "tools/list", json!({})).await);
    assert!(after.contains(&"py__extra".to_string()), "{after:?}");
    assert_eq!(
        text(&agent.call(json!(4), "py__extra", json!({})).await),
        "extra"
    );
    agent.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_ids_never_reach_the_upstream() {
    let mut agent = Agent::start(config(&["py"]), two_upstreams(&[]));
    agent.initialize().await;
    let r = agent
        .call(json!("agent-chosen-id"), "py__request_id", json!({}))
        .await;
    assert_eq!(r["id"], "agent-chosen-id");
    let seen = text(&r);
    assert!(
        seen != "agent-chosen-id" && seen.parse::<u64>().is_ok(),
        "upstream saw id {seen:?}"
    );
    agent.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_call_does_not_delay_another_upstream_or_ping() {
    let mut agent = Agent::start(config(&["py", "every"]), two_upstreams(&[]));
    agent.initialize().await;
    // Both upstreams running before the race.
    agent.request(json!(1), "tools/list", json!({})).await;
    let slow = agent
        .start_request(
            json!("slow"),
            "tools/call",
            json!({"name": "py__slow", "arguments": {"seconds": 3}, "_meta": {"progressToken": 1}}),
        )
        .await;
    // The first progress notification proves the slow call is running.
    let first = agent.next_progress().await;
    assert_eq!(first["params"]["progressToken"], 1);
    assert_eq!(first["params"]["total"], 10);
    // The fixture says "step i of n": upstream text no filter has seen,
    // not passed on.
    assert!(first["params"].get("message").is_none(), "{first}");
    let echo = agent
        .call(json!("echo"), "every__echo", json!({"message": "quick"}))
        .await;
    assert_eq!(text(&echo), "Echo: quick");
    let ping = agent.request(json!("ping"), "ping", json!({})).await;
    assert_eq!(ping["result"], json!({}));
    // And a second call to the same slow upstream is not queued behind it.
    let pid = agent.call(json!("pid"), "py__pid", json!({})).await;
    assert!(text(&pid).parse::<u32>().is_ok());
    let slow = slow.await.unwrap();
    assert_eq!(text(&slow), "slept 3.0");
    let order = agent.arrival_order();
    let pos = |id: &str| order.iter().position(|v| v == id).unwrap();
    assert!(
        pos("echo") < pos("slow") && pos("ping") < pos("slow") && pos("pid") < pos("slow"),
        "{order:?}"
    );
    agent.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_cancelled_stops_the_upstream_call() {
    let log = temp_log("cancel");
    let log_s = log.display().to_string();
    let mut agent = Agent::start(config(&["py"]), two_upstreams(&[("FIXTURE_LOG", &log_s)]));
    agent.initialize().await;
    let _never = agent
        .start_request(
            json!(41),
            "tools/call",
            json!({"name": "py__slow", "arguments": {"seconds": 30}, "_meta": {"progressToken": "t"}}),
        )
        .await;
    agent.next_progress().await;
    agent
        .send(json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 41}}))
        .await;
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    eventually("the upstream records the cancellation", || {
        read().contains("slow cancelled")
    })
    .await;
    // The upstream goes on serving; the cancelled call is never answered.
    assert!(text(&agent.call(json!(42), "py__pid", json!({})).await)
        .parse::<u32>()
        .is_ok());
    assert!(
        !agent.received(&json!(41)),
        "a cancelled request was answered"
    );
    assert!(!read().contains("slow finished"));
    eventually("the cancelled call is audited", || {
        agent
            .audit
            .all()
            .iter()
            .any(|r| r.tool == "slow" && r.decision == Decision::Cancelled)
    })
    .await;
    agent.disconnect().await;
    let _ = std::fs::remove_file(&log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_mib_result_passes() {
    let mut agent = Agent::start(config(&["py"]), two_upstreams(&[]));
    agent.initialize().await;
    let r = agent
        .call(json!(1), "py__big", json!({"size": 1 << 20}))
        .await;
    let t = text(&r);
    assert_eq!(t.len(), 1 << 20);
    assert!(t.bytes().all(|b| b == b'x'));
    assert!(agent.audit.all()[0].response_bytes > 1 << 20);
    agent.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_over_the_limit_is_an_error_not_a_hang() {
    let mut cfg = config(&["py"]);
    cfg.pool.max_message = 256 * 1024;
    let mut agent = Agent::start(cfg, two_upstreams(&[]));
    agent.initialize().await;
    // Over 64 KiB and under the limit: passes.
    assert_eq!(
        text(
            &agent
                .call(json!(1), "py__big", json!({"size": 100_000}))
                .await
        )
        .len(),
        100_000
    );
    let r = agent
        .call(json!(2), "py__big", json!({"size": 1 << 20}))
        .await;
    assert_eq!(
        r["error"]["code"],
        jsonrpc::UPSTREAM_UNAVAILABLE,
        "{}",
        truncate(&r)
    );
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("larger than 262144 bytes"),
        "{}",
        truncate(&r)
    );
    // The upstream is restarted for the next call.
    assert!(text(&agent.call(json!(3), "py__pid", json!({})).await)
        .parse::<u32>()
        .is_ok());
    agent.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_message_over_the_limit_is_refused_and_the_session_goes_on() {
    let mut cfg = config(&["py"]);
    cfg.max_message = 128 * 1024;
    let mut agent = Agent::start(cfg, two_upstreams(&[]));
    agent.initialize().await;
    let huge = "a".repeat(200 * 1024);
    // An oversized line is never parsed, so its id is unknown: the error
    // is answered under a null id (the waiter here is keyed by null).
    let rx = agent
        .start_request(
            Value::Null,
            "tools/call",
            json!({"name": "py__echo_env", "arguments": {"name": huge}}),
        )
        .await;
    let r = tokio::time::timeout(Duration::from_secs(60), rx)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        r["error"]["code"],
        jsonrpc::INVALID_REQUEST,
        "{}",
        truncate(&r)
    );
    assert!(r["error"]["message"]
        .as_str()
        .unwrap()
        .contains("larger than 131072 bytes"));
    assert!(agent.audit.all().is_empty(), "an unread call is not routed");
    // Over 64 KiB and under the limit works, and so does everything after.
    let name = "b".repeat(100 * 1024);
    assert_eq!(
        text(
            &agent
                .call(json!(2), "py__echo_env", json!({"name": name}))
                .await
        ),
        ""
    );
    assert_eq!(
        agent.request(json!(3), "ping", json!({})).await["result"],
        json!({})
    );
    agent.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_is_forwarded_under_the_agents_token() {
    let mut agent = Agent::start(config(&["every"]), two_upstreams(&[]));
    agent.initialize().await;
    let done = agent
        .start_request(
            json!(7),
            "tools/call",
            json!({
                "name": "every__trigger-long-running-operation",
                "arguments": {"duration": 1, "steps": 3},
                "_meta": {"progressToken": "agent-token"},
            }),
        )
        .await;
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let n = agent.next_notification().await;
        if n["method"] == "notifications/progress" {
            assert_eq!(n["params"]["progressToken"], "agent-token", "{n}");
            seen.push(n["params"]["progress"].as_f64().unwrap());
        }
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    let r = done.await.unwrap();
    assert!(r["result"]["content"].is_array(), "{}", truncate(&r));
    agent.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_upstream_is_restarted() {
    let mut agent = Agent::start(config(&["py"]), two_upstreams(&[]));
    agent.initialize().await;
    let first: u32 = text(&agent.call(json!(1), "py__pid", json!({})).await)
        .parse()
        .unwrap();
    let crash = agent.call(json!(2), "py__crash", json!({})).await;
    assert_eq!(
        crash["error"]["code"],
        jsonrpc::UPSTREAM_UNAVAILABLE,
        "{}",
        truncate(&crash)
    );
    let second: u32 = text(&agent.call(json!(3), "py__pid", json!({})).await)
        .parse()
        .unwrap();
    assert_ne!(first, second);
    let decisions: Vec<_> = agent.audit.all().into_iter().map(|r| r.decision).collect();
    assert_eq!(
        decisions,
        [
            Decision::Allowed,
            Decision::UpstreamUnavailable,
            Decision::Allowed
        ]
    );
    agent.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstreams_stop_when_idle_and_when_the_agent_disconnects() {
    let mut cfg = config(&["py"]);
    cfg.pool.idle_timeout = Some(Duration::from_millis(300));
    let mut agent = Agent::start(cfg, two_upstreams(&[]));
    agent.initialize().await;
    let first: u32 = text(&agent.call(json!(1), "py__pid", json!({})).await)
        .parse()
        .unwrap();
    eventually("the idle upstream is stopped", || !alive(first)).await;
    let second: u32 = text(&agent.call(json!(2), "py__pid", json!({})).await)
        .parse()
        .unwrap();
    assert_ne!(first, second, "started afresh on next use");
    assert!(alive(second));

    let mut cfg = config(&["py"]);
    cfg.pool.idle_timeout = None;
    let mut other = Agent::start(cfg, two_upstreams(&[]));
    other.initialize().await;
    let third: u32 = text(&other.call(json!(1), "py__pid", json!({})).await)
        .parse()
        .unwrap();
    other.disconnect().await;
    eventually("the upstream is stopped when its agent leaves", || {
        !alive(third)
    })
    .await;
    agent.disconnect().await;
}

/// Hides `every__get-env`, renames `py__echo_env` to `env`, refuses calls
/// whose `name` argument is `HOME`, sends a `name` argument trimmed of
/// spaces (as a normalising check would), and refuses results containing
/// "FORBIDDEN".
struct TestPolicy;

impl Policy for TestPolicy {
    fn visible(&self, server: &str, tool: &Value) -> Option<VisibleTool> {
        let name = tool["name"].as_str()?;
        let exposed = match (server, name) {
            ("every", "get-env") => return None,
            ("py", "echo_env") => "env".to_string(),
            _ => namespaced(server, name),
        };
        let mut definition = tool.clone();
        definition["name"] = json!(exposed);
        Some(VisibleTool {
            name: exposed,
            definition,
        })
    }
    fn check_call(&self, _: &CallInfo, arguments: &Value) -> Result<Value, Refusal> {
        match arguments["name"].as_str() {
            Some("HOME") => Err(Refusal::new("argument name not allowed")),
            Some(name) => Ok(json!({"name": name.trim()})),
            None => Ok(arguments.clone()),
        }
    }
    fn filter_result(&self, _: &CallInfo, result: Value) -> Result<Filtered, Refusal> {
        let text = result.to_string();
        if text.contains("FORBIDDEN") {
            return Err(Refusal::new("result matched a detector"));
        }
        let actions = if text.contains("aivault-gw-policy") {
            vec!["noted a log path".to_string()]
        } else {
            vec![]
        };
        Ok(Filtered { result, actions })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_decides_what_is_listed_called_and_returned() {
    let log = temp_log("policy");
    let log_s = log.display().to_string();
    let env = [
        ("FIXTURE_LOG", log_s.as_str()),
        ("SECRET_WORD", "FORBIDDEN"),
    ];
    let mut agent = Agent::with_policy(
        config(&["py", "every"]),
        two_upstreams(&env),
        Arc::new(TestPolicy),
    );
    agent.initialize().await;
    let names = tool_names(&agent.request(json!(1), "tools/list", json!({})).await);
    assert!(
        names.contains(&"env".to_string()) && names.contains(&"every__echo".to_string()),
        "{names:?}"
    );
    for hidden in ["every__get-env", "py__echo_env", "echo_env", "get-env"] {
        assert!(
            !names.contains(&hidden.to_string()),
            "{hidden} listed: {names:?}"
        );
        let r = agent
            .call(json!(hidden), hidden, json!({"name": "PATH"}))
            .await;
        assert_eq!(
            r["error"]["code"],
            jsonrpc::INVALID_PARAMS,
            "{hidden} callable: {}",
            truncate(&r)
        );
    }
    assert_eq!(
        text(
            &agent
                .call(json!(2), "env", json!({"name": "FIXTURE_LOG"}))
                .await
        ),
        log_s
    );
    // The upstream receives the arguments the policy checked, not the
    // agent's.
    assert_eq!(
        text(
            &agent
                .call(json!(5), "env", json!({"name": "  FIXTURE_LOG "}))
                .await
        ),
        log_s
    );
    let refused = agent.call(json!(3), "env", json!({"name": "HOME"})).await;
    assert_eq!(refused["error"]["code"], jsonrpc::REFUSED);
    let filtered = agent
        .call(json!(4), "env", json!({"name": "SECRET_WORD"}))
        .await;
    assert_eq!(filtered["error"]["code"], jsonrpc::REFUSED);
    assert!(
        !filtered.to_string().contains("FORBIDDEN"),
        "the refused result leaks: {filtered}"
    );

    let decisions: Vec<_> = agent.audit.all().into_iter().map(|r| r.decision).collect();
    assert_eq!(
        decisions
            .iter()
            .filter(|d| **d == Decision::UnknownTool)
            .count(),
        4
    );
    assert!(decisions.contains(&Decision::Refused("argument name not allowed".into())));
    assert!(decisions.contains(&Decision::ResultRefused("result matched a detector".into())));
    agent.disconnect().await;
    let _ = std::fs::remove_file(&log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_on_two_upstreams_each_get_their_own_answer() {
    let mut agent = Agent::start(config(&["py", "every"]), two_upstreams(&[]));
    agent.initialize().await;
    let mut pending = Vec::new();
    for i in 0..24u64 {
        let (name, args) = if i % 2 == 0 {
            ("every__echo", json!({"message": format!("m{i}")}))
        } else {
            ("py__big", json!({"size": i * 1000}))
        };
        let rx = agent
            .start_request(
                json!(format!("c{i}")),
                "tools/call",
                json!({"name": name, "arguments": args}),
            )
            .await;
        pending.push((i, rx));
    }
    for (i, rx) in pending {
        let r = tokio::time::timeout(Duration::from_secs(60), rx)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r["id"], format!("c{i}"));
        if i % 2 == 0 {
            assert_eq!(text(&r), format!("Echo: m{i}"));
        } else {
            assert_eq!(text(&r).len() as u64, i * 1000);
        }
    }
    agent.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_are_bounded_and_their_ids_unique() {
    let mut cfg = config(&["py"]);
    cfg.max_in_flight = 1;
    let mut agent = Agent::start(cfg, two_upstreams(&[]));
    agent.initialize().await;
    let slow = agent
        .start_request(
            json!(1),
            "tools/call",
            json!({"name": "py__slow", "arguments": {"seconds": 1}, "_meta": {"progressToken": "p"}}),
        )
        .await;
    agent.next_progress().await;
    let busy = agent.call(json!(2), "py__pid", json!({})).await;
    assert_eq!(
        busy["error"]["code"],
        jsonrpc::SERVER_BUSY,
        "{}",
        truncate(&busy)
    );
    // ping is not a request that waits: answered whatever is in flight.
    assert_eq!(
        agent.request(json!(3), "ping", json!({})).await["result"],
        json!({})
    );
    assert_eq!(text(&slow.await.unwrap()), "slept 1.0");

    let mut cfg = config(&["py"]);
    cfg.max_in_flight = 8;
    let mut other = Agent::start(cfg, two_upstreams(&[]));
    other.initialize().await;
    let first = other
        .start_request(
            json!(9),
            "tools/call",
            json!({"name": "py__slow", "arguments": {"seconds": 1}, "_meta": {"progressToken": "p"}}),
        )
        .await;
    other.next_progress().await;
    // A second request under the same id while the first is in flight.
    other
        .send(json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "py__pid"}}))
        .await;
    let r = first.await.unwrap();
    assert_eq!(
        r["error"]["code"],
        jsonrpc::INVALID_REQUEST,
        "the duplicate is refused: {}",
        truncate(&r)
    );
    agent.disconnect().await;
    other.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_leaving_mid_call_ends_the_call_and_its_upstream() {
    let log = temp_log("leave");
    let log_s = log.display().to_string();
    let mut agent = Agent::start(config(&["py"]), two_upstreams(&[("FIXTURE_LOG", &log_s)]));
    agent.initialize().await;
    let pid: u32 = text(&agent.call(json!(1), "py__pid", json!({})).await)
        .parse()
        .unwrap();
    let _never = agent
        .start_request(
            json!(2),
            "tools/call",
            json!({"name": "py__slow", "arguments": {"seconds": 600}, "_meta": {"progressToken": 2}}),
        )
        .await;
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    eventually("the slow call runs", || read().contains("slow started")).await;
    // The session ends (within disconnect's bound, far below the call's
    // 600 s) without waiting for the call.
    agent.disconnect().await;
    eventually("the upstream is stopped", || !alive(pid)).await;
    let records = agent.audit.all();
    assert_eq!(
        records.last().unwrap().decision,
        Decision::Cancelled,
        "{records:?}"
    );
}
