//! hostile-broker (test guest): each plan's provision attacks the sandbox in one way. Attacks
//! that try to reach something answer `Done` with what they got if they succeed (the test then
//! fails) and 422 "blocked: ..." when the sandbox stopped them.

use brokerbox_sdk::*;
use serde_json::json;

struct Hostile;

const ATTACKS: [&str; 13] = [
    "loop",
    "fuel",
    "memory",
    "recursion",
    "panic",
    "huge",
    "passwd",
    "escape",
    "kv-flood",
    "print-flood",
    "http",
    "big-data",
    "ok",
];

fn blocked(what: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unprocessable(format!("blocked: {what}"))
}

fn leaked(value: serde_json::Value) -> Result<InstanceResponse, BrokerError> {
    Ok(InstanceResponse::Done(InstanceResult {
        dashboard_url: None,
        metadata: Some(json!({ "leak": value }).to_string()),
    }))
}

/// Recurses until the wasm stack runs out. Only plain values cross the calls, so the frames
/// live on the wasm stack (not the shadow stack in linear memory), and the result is mixed in a
/// way the optimiser cannot turn into a loop.
#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    recurse(depth + 1).wrapping_mul(3) ^ depth
}

fn attack(name: &str) -> Result<InstanceResponse, BrokerError> {
    match name {
        "loop" => loop {
            std::hint::black_box(0u64);
        },
        "fuel" => {
            let mut x = 0u64;
            loop {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        "memory" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1024 * 1024]);
                std::hint::black_box(&hoard);
            }
        }
        "recursion" => Ok(InstanceResponse::Done(InstanceResult {
            dashboard_url: Some(recurse(0).to_string()),
            metadata: None,
        })),
        "panic" => panic!("hostile-broker panics on purpose"),
        "huge" => {
            let size = 100 * 1024 * 1024;
            // Filled with one bulk `memory.fill`, so building it costs little fuel.
            let mut bytes = Vec::with_capacity(size + 16);
            bytes.extend_from_slice(b"{\"blob\":\"");
            bytes.resize(size + 9, b'x');
            bytes.extend_from_slice(b"\"}");
            let metadata = String::from_utf8(bytes).map_err(blocked)?;
            Ok(InstanceResponse::Done(InstanceResult {
                dashboard_url: None,
                metadata: Some(metadata),
            }))
        }
        "passwd" => match std::fs::read_to_string("/etc/passwd") {
            Ok(content) => leaked(json!(content)),
            Err(e) => Err(blocked(e)),
        },
        "escape" => {
            let dir = files_dir().ok_or_else(|| blocked("no files grant"))?;
            let outside = dir.join("../../../../../../../../etc/passwd");
            if let Ok(content) = std::fs::read_to_string(&outside) {
                return leaked(json!(content));
            }
            match std::fs::write(dir.join("../escaped.txt"), b"out") {
                Ok(()) => leaked(json!("wrote outside the granted directory")),
                Err(e) => Err(blocked(e)),
            }
        }
        "kv-flood" => {
            let value = vec![7u8; 1024];
            for i in 0.. {
                if let Err(e) = kv::set(&format!("flood/{i}"), &value) {
                    return Err(blocked(format!("{e:?} after {i} keys")));
                }
            }
            unreachable!()
        }
        "print-flood" => {
            let line = "y".repeat(1024);
            for _ in 0..10_000 {
                println!("{line}");
            }
            Ok(InstanceResponse::Done(InstanceResult::default()))
        }
        "http" => match http::get("http://127.0.0.1:1/not-on-the-allowlist") {
            Ok(response) => leaked(json!(response.status)),
            Err(e) => Err(blocked(e)),
        },
        "big-data" => Ok(InstanceResponse::Accepted(InstanceAccepted {
            operation_data: "d".repeat(1024 * 1024),
            instance: InstanceResult::default(),
        })),
        _ => Ok(InstanceResponse::Done(InstanceResult::default())),
    }
}

impl Broker for Hostile {
    fn catalog() -> Result<ServiceCatalog, BrokerError> {
        let service = ATTACKS.iter().fold(
            Service::new("hostile-service", "hostile", "Attacks the sandbox"),
            |s, a| s.plan(Plan::new(&format!("{a}-plan"), a, "An attack")),
        );
        Ok(ServiceCatalog::new(vec![service]))
    }

    fn provision(request: ProvisionRequest) -> Result<InstanceResponse, BrokerError> {
        let name = request.plan_id.trim_end_matches("-plan").to_string();
        attack(&name)
    }

    fn deprovision(_request: DeprovisionRequest) -> Result<DeleteResponse, BrokerError> {
        Ok(DeleteResponse::Done)
    }
}

export_broker!(Hostile);
