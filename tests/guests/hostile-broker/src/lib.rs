//! hostile-broker (test guest): each plan's provision attacks the sandbox in one way. Attacks
//! that try to reach something answer `Done` with what they got if they succeed (the test then
//! fails) and 422 "blocked: ..." when the sandbox stopped them.

use brokerbox_sdk::*;
use serde_json::json;

struct Hostile;

const ATTACKS: [&str; 19] = [
    "kv-churn",
    "sleep",
    "random",
    "files-flood",
    "files-many",
    "endpoints",
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

/// The plan id of attack `attack` in the service `service_id` (the first copy keeps the
/// plain `ATTACK-plan` ids).
fn plan_id(service_id: &str, attack: &str) -> String {
    if service_id == "hostile-service" {
        format!("{attack}-plan")
    } else {
        format!("{service_id}-{attack}-plan")
    }
}

/// The attack a plan id names.
fn attack_of(plan_id: &str) -> &str {
    let plan = plan_id.trim_end_matches("-plan");
    ATTACKS
        .iter()
        .find(|a| {
            plan.ends_with(*a)
                && (plan.len() == a.len() || plan[..plan.len() - a.len()].ends_with('-'))
        })
        .copied()
        .unwrap_or(plan)
}

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
        "kv-churn" => {
            // Writes until the call's deadline stops it, usually in the middle of a write.
            let value = vec![7u8; 512];
            for i in 0u64.. {
                let key = format!("churn/{}", i % 4);
                if let Err(e) = kv::set(&key, &value).and_then(|()| kv::delete(&key)) {
                    return Err(blocked(format!("{e:?} after {i} rounds")));
                }
            }
            unreachable!()
        }
        "sleep" => {
            // Holds its instance slot without using CPU until the deadline.
            std::thread::sleep(std::time::Duration::from_secs(3600));
            Ok(InstanceResponse::Done(InstanceResult::default()))
        }
        "random" => {
            // The host fills every byte in one synchronous call.
            let bytes = wasip2::random::random::get_random_bytes(64 << 20);
            leaked(json!(bytes.len()))
        }
        "files-flood" => {
            use std::io::Write;
            let dir = files_dir().ok_or_else(|| blocked("no files grant"))?;
            let chunk = vec![b'z'; 1024 * 1024];
            let mut written = 0usize;
            for n in 0.. {
                let mut file = std::fs::File::create(dir.join(format!("flood-{n}")))
                    .map_err(|e| blocked(format!("{e} after {written} bytes")))?;
                for _ in 0..16 {
                    file.write_all(&chunk)
                        .map_err(|e| blocked(format!("{e} after {written} bytes")))?;
                    written += chunk.len();
                }
            }
            unreachable!()
        }
        "files-many" => {
            let dir = files_dir().ok_or_else(|| blocked("no files grant"))?;
            for n in 0.. {
                std::fs::write(dir.join(format!("many-{n}")), b"x")
                    .map_err(|e| blocked(format!("{e} after {n} files")))?;
            }
            unreachable!()
        }
        "big-data" => Ok(InstanceResponse::Accepted(InstanceAccepted {
            operation_data: "d".repeat(1024 * 1024),
            instance: InstanceResult::default(),
        })),
        _ => Ok(InstanceResponse::Done(InstanceResult::default())),
    }
}

impl Broker for Hostile {
    fn catalog() -> Result<ServiceCatalog, BrokerError> {
        if config("STALL_CATALOG").is_some() {
            // A catalog that never comes (until the load deadline stops it).
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
        // Ids from [env] SERVICE_ID, so several copies can be served side by side.
        let id = config("SERVICE_ID").unwrap_or_else(|| "hostile-service".into());
        let service = ATTACKS.iter().fold(
            Service::new(&id, "hostile", "Attacks the sandbox").bindable(true),
            |s, a| s.plan(Plan::new(&plan_id(&id, a), a, "An attack")),
        );
        Ok(ServiceCatalog::new(vec![service]))
    }

    fn provision(request: ProvisionRequest) -> Result<InstanceResponse, BrokerError> {
        attack(attack_of(&request.plan_id))
    }

    fn bind(request: BindRequest) -> Result<BindingResponse, BrokerError> {
        if attack_of(&request.plan_id) != "endpoints" {
            return Ok(BindingResponse::Done(BindingResult::default()));
        }
        // 1.5 million empty endpoints: tens of MiB of guest memory, each entry a host
        // allocation if the host lifted them all.
        let endpoint = Endpoint {
            host: String::new(),
            ports: Vec::new(),
            protocol: None,
        };
        Ok(BindingResponse::Done(BindingResult {
            endpoints: vec![endpoint; 1_500_000],
            ..BindingResult::default()
        }))
    }

    fn deprovision(_request: DeprovisionRequest) -> Result<DeleteResponse, BrokerError> {
        Ok(DeleteResponse::Done)
    }
}

export_broker!(Hostile);
