//! The three descriptions of the API agree: the handlers' route tables, the SAM template and
//! the OpenAPI document; and the OpenAPI examples are answered as documented.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use serde_yaml_ng::Value as Yaml;
use tests::clerk;
use tests::{Event, Functions, TestDb, body_json};

fn repo_file(path: &str) -> String {
    let full = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("read {}: {e}", full.display()))
}

fn yaml(path: &str) -> Yaml {
    serde_yaml_ng::from_str(&repo_file(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Each HTTP function's package and route table.
fn handler_routes() -> BTreeMap<&'static str, BTreeMap<String, BTreeSet<String>>> {
    let table = |routes: &shared::http::Routes| {
        routes
            .iter()
            .map(|(path, methods)| {
                (
                    (*path).to_owned(),
                    methods.split(',').map(|m| m.trim().to_owned()).collect(),
                )
            })
            .collect()
    };
    BTreeMap::from([
        ("ingest", table(ingest::ROUTES)),
        ("devices", table(devices::ROUTES)),
        ("rollups", table(rollups::ROUTES)),
        ("clerk-webhook", table(clerk_webhook::ROUTES)),
    ])
}

#[test]
fn the_template_routes_exactly_the_handlers_routes() {
    let template = yaml("template.yaml");
    let resources = template["Resources"].as_mapping().unwrap();
    let mut routed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut binaries = BTreeSet::new();
    let mut schedules = Vec::new();
    for (_, resource) in resources {
        if resource["Type"] != "AWS::Serverless::Function" {
            continue;
        }
        assert_eq!(resource["Metadata"]["BuildMethod"], "rust-cargolambda");
        let binary = resource["Metadata"]["BuildProperties"]["Binary"]
            .as_str()
            .unwrap()
            .to_owned();
        // Every Binary is a package of the workspace.
        let manifest = repo_file(&format!("functions/{binary}/Cargo.toml"));
        assert!(
            manifest.contains(&format!("name = \"{binary}\"")),
            "{binary}"
        );
        for (_, event) in resource["Properties"]["Events"].as_mapping().unwrap() {
            match event["Type"].as_str().unwrap() {
                "HttpApi" => {
                    assert_eq!(
                        event["Properties"]["Method"], "ANY",
                        "the function answers 405 itself"
                    );
                    let path = event["Properties"]["Path"].as_str().unwrap().to_owned();
                    routed.entry(binary.clone()).or_default().insert(path);
                }
                "Schedule" => schedules.push((
                    binary.clone(),
                    event["Properties"]["Schedule"].as_str().unwrap().to_owned(),
                )),
                other => panic!("unexpected event type {other}"),
            }
        }
        binaries.insert(binary);
    }
    assert_eq!(
        binaries,
        [
            "alert-eval",
            "clerk-webhook",
            "devices",
            "ingest",
            "rollups"
        ]
        .map(String::from)
        .into()
    );
    assert_eq!(
        schedules,
        [("alert-eval".to_owned(), "rate(1 minute)".to_owned())]
    );
    let handlers: BTreeMap<String, BTreeSet<String>> = handler_routes()
        .into_iter()
        .map(|(binary, routes)| (binary.to_owned(), routes.into_keys().collect()))
        .collect();
    assert_eq!(routed, handlers);
    let globals = &template["Globals"]["Function"];
    assert_eq!(globals["Runtime"], "provided.al2023");
    assert_eq!(globals["Architectures"][0], "arm64");
    assert_eq!(globals["Handler"], "bootstrap");
    assert_eq!(globals["CodeUri"], ".");
    assert_eq!(globals["LoggingConfig"]["LogFormat"], "JSON");
    // At TRACE or DEBUG the runtime logs raw events, Authorization headers and cookies included.
    let levels = &template["Parameters"]["LogLevel"]["AllowedValues"];
    assert_eq!(
        levels,
        &serde_yaml_ng::from_str::<Yaml>("[INFO, WARN, ERROR, FATAL]").unwrap()
    );
    // The token's issuer and authorized parties are pinned in every deploy.
    for pin in ["ClerkIssuer", "ClerkAuthorizedParties"] {
        let parameter = &template["Parameters"][pin];
        assert!(parameter["Default"].is_null(), "{pin} has no default");
        assert!(parameter["AllowedPattern"].is_string(), "{pin} is checked");
    }
}

/// The console's CloudFront distribution serves the files from the bucket and sends every API
/// path to the HTTP API, uncached, with every header (Authorization) and every method.
#[test]
fn the_console_distribution_sends_every_api_route_to_the_api() {
    const CACHING_DISABLED: &str = "4135ea2d-6df8-44a3-9df3-4b5a84be39ad";
    const ALL_VIEWER_EXCEPT_HOST: &str = "b689b0a8-53d0-40ab-baf2-68738e2966ac";
    let template = yaml("template.yaml");
    let config = &template["Resources"]["ConsoleDistribution"]["Properties"]["DistributionConfig"];
    let origin = |id: &str| {
        config["Origins"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|o| o["Id"] == id)
            .unwrap_or_else(|| panic!("origin {id}"))
            .clone()
    };
    assert!(format!("{:?}", origin("api")["DomainName"]).contains("${HttpApi}.execute-api"));
    assert!(format!("{:?}", origin("console")["DomainName"]).contains("ConsoleBucket"));
    assert_eq!(config["DefaultCacheBehavior"]["TargetOriginId"], "console");
    let behaviors = config["CacheBehaviors"].as_sequence().unwrap();
    for routes in handler_routes().values() {
        for path in routes.keys() {
            let prefix = format!("/{}/*", path.split('/').nth(1).unwrap());
            let behavior = behaviors
                .iter()
                .find(|b| b["PathPattern"] == prefix.as_str())
                .unwrap_or_else(|| panic!("no behaviour sends {path} to the API"));
            assert_eq!(behavior["TargetOriginId"], "api", "{path}");
            assert_eq!(behavior["CachePolicyId"], CACHING_DISABLED, "{path}");
            assert_eq!(
                behavior["OriginRequestPolicyId"], ALL_VIEWER_EXCEPT_HOST,
                "{path}"
            );
            assert_eq!(behavior["AllowedMethods"].as_sequence().unwrap().len(), 7);
        }
    }
}

#[test]
fn the_openapi_document_describes_exactly_the_handlers_routes() {
    let openapi = yaml("openapi.yaml");
    assert_eq!(openapi["openapi"], "3.1.0");
    let mut documented: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, item) in openapi["paths"].as_mapping().unwrap() {
        let methods = item
            .as_mapping()
            .unwrap()
            .keys()
            .filter_map(Yaml::as_str)
            .filter(|k| ["get", "post", "patch", "delete", "put"].contains(k))
            .map(str::to_uppercase)
            .collect();
        documented.insert(path.as_str().unwrap().to_owned(), methods);
    }
    let handlers: BTreeMap<String, BTreeSet<String>> =
        handler_routes().into_values().flatten().collect();
    assert_eq!(documented, handlers);
}

#[tokio::test]
async fn every_route_is_known_to_its_handler() {
    let test = TestDb::new().await;
    let config = test.config(&[]);
    let functions = Functions::new(&config);
    for (binary, routes) in handler_routes() {
        for (path, methods) in routes {
            let concrete = path
                .replace("{id}", "5f0c6c1e-8f7a-4d7e-9a51-3b0f2c9d8e11")
                .replace("{rule_id}", "9b2d7c4e-1a3f-4e5b-8c6d-7e8f9a0b1c2d");
            let event = Event::load("devices-list")
                .at("TRACE", &concrete)
                .without_header("authorization");
            let response = match binary {
                "ingest" => ingest::handle(&functions.ingest, event.request()).await,
                "devices" => devices::handle(&functions.devices, event.request()).await,
                "rollups" => rollups::handle(&functions.rollups, event.request()).await,
                _ => clerk_webhook::handle(&functions.webhook, event.request()).await,
            };
            assert_eq!(response.status(), 405, "{binary} {path}");
            let allow: BTreeSet<String> = response.headers()["allow"]
                .to_str()
                .unwrap()
                .split(',')
                .map(|m| m.trim().to_owned())
                .collect();
            assert_eq!(allow, methods, "{binary} {path}");
        }
    }
}

/// Sends every documented example, in an order that creates before it reads and deletes
/// last, and expects the documented success status.
#[tokio::test]
async fn the_openapi_examples_are_answered_as_documented() {
    let test = TestDb::new().await;
    // The channel example sends to a local port.
    let config = test.config(&[("NOTIFY_ALLOW_PRIVATE_TARGETS", "true")]);
    let functions = Functions::new(&config);
    let openapi = yaml("openapi.yaml");
    let user = "user_openapi";
    let token = clerk::token(user);
    let order = [
        ("/v1/devices", "post"),
        ("/v1/devices", "get"),
        ("/v1/devices/{id}", "get"),
        ("/v1/devices/{id}", "patch"),
        ("/v1/devices/{id}/rules", "post"),
        ("/v1/devices/{id}/rules", "get"),
        ("/v1/devices/{id}/rules/{rule_id}", "get"),
        ("/v1/devices/{id}/rules/{rule_id}", "patch"),
        ("/v1/ingest", "post"),
        ("/v1/devices/{id}/rollups", "get"),
        ("/v1/devices/{id}/readings", "get"),
        ("/v1/devices/{id}/latest", "get"),
        ("/v1/alerts", "get"),
        ("/v1/alerts/{id}/ack", "post"),
        ("/v1/channels", "post"),
        ("/v1/channels", "get"),
        ("/v1/channels/{id}", "get"),
        ("/v1/channels/{id}", "patch"),
        ("/v1/channels/{id}/test", "post"),
        ("/v1/channels/{id}/deliveries", "get"),
        ("/v1/silences", "post"),
        ("/v1/silences", "get"),
        ("/v1/silences/{id}", "get"),
        ("/v1/silences/{id}", "patch"),
        ("/v1/silences/{id}", "delete"),
        ("/v1/channels/{id}", "delete"),
        ("/webhooks/clerk", "post"),
        ("/v1/devices/{id}/keys", "post"),
        ("/v1/devices/{id}/rules/{rule_id}", "delete"),
        ("/v1/devices/{id}", "delete"),
    ];
    let documented: usize = openapi["paths"]
        .as_mapping()
        .unwrap()
        .values()
        .map(|item| {
            item.as_mapping()
                .unwrap()
                .keys()
                .filter(|k| k.as_str() != Some("parameters"))
                .count()
        })
        .sum();
    assert_eq!(order.len(), documented, "every operation is exercised");

    let (mut device_id, mut device_key, mut rule_id) =
        (String::new(), String::new(), String::new());
    let (mut alert_id, mut channel_id, mut silence_id) =
        (String::new(), String::new(), String::new());
    for (path, method) in order {
        let operation = &openapi["paths"][path][method];
        let to_json = |y: &Yaml| serde_json::to_value(y).unwrap();
        let body: Option<Value> = operation["requestBody"]["content"]["application/json"]
            .get("example")
            .map(to_json);
        let query: Vec<String> = operation["parameters"]
            .as_sequence()
            .map(|params| {
                params
                    .iter()
                    .filter(|p| p["in"] == "query" && p.get("example").is_some())
                    .map(|p| {
                        format!(
                            "{}={}",
                            p["name"].as_str().unwrap(),
                            to_json(&p["example"])
                                .as_str()
                                .map(str::to_owned)
                                .unwrap_or_default()
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let status: u16 = operation["responses"]
            .as_mapping()
            .unwrap()
            .keys()
            .filter_map(|k| k.as_str()?.parse().ok())
            .find(|s: &u16| (200..300).contains(s))
            .unwrap();
        let id = if path.starts_with("/v1/alerts/") {
            &alert_id
        } else if path.starts_with("/v1/channels/") {
            &channel_id
        } else if path.starts_with("/v1/silences/") {
            &silence_id
        } else {
            &device_id
        };
        let concrete = path.replace("{id}", id).replace("{rule_id}", &rule_id);
        let mut event = Event::load("devices-list")
            .at(&method.to_uppercase(), &concrete)
            .query(&query.join("&"))
            .header("authorization", &format!("Bearer {token}"));
        if let Some(body) = &body {
            event = event
                .json_body(body)
                .header("content-type", "application/json");
        }
        // Each route with its own credential: the device key for ingest, a signature for the
        // webhook, the user's token elsewhere.
        let event = match path {
            "/v1/ingest" => event.header("authorization", &format!("Bearer {device_key}")),
            "/webhooks/clerk" => clerk::webhook(
                "clerk-webhook-user-created",
                body.as_ref().unwrap(),
                "msg_openapi",
                clerk::now(),
            ),
            _ => event,
        };
        let response = functions.handle(event.request()).await;
        let answer = body_json(&response);
        assert_eq!(
            response.status().as_u16(),
            status,
            "{method} {path}: {answer}"
        );
        if (path, method) == ("/v1/devices", "post") {
            device_id = answer["id"].as_str().unwrap().to_owned();
            device_key = answer["device_key"].as_str().unwrap().to_owned();
        }
        if (path, method) == ("/v1/devices/{id}/rules", "post") {
            rule_id = answer["id"].as_str().unwrap().to_owned();
            // An alert of that rule, as a pass would raise it, for the acknowledgement.
            let row = test
                .direct
                .query_one(
                    "INSERT INTO alerts (rule_id, device_id, owner_id, metric, status, value,
                                         triggered_at)
                     SELECT r.id, r.device_id, $2, r.metric, 'firing', 1, now()
                     FROM alert_rules r WHERE r.id = $1::text::uuid RETURNING id::text",
                    &[&rule_id, &user],
                )
                .await
                .unwrap();
            alert_id = row.get(0);
        }
        if (path, method) == ("/v1/channels", "post") {
            channel_id = answer["id"].as_str().unwrap().to_owned();
        }
        if (path, method) == ("/v1/silences", "post") {
            silence_id = answer["id"].as_str().unwrap().to_owned();
        }
        if (path, method) == ("/v1/ingest", "post") {
            let example =
                to_json(&operation["responses"]["200"]["content"]["application/json"]["example"]);
            assert_eq!(answer, example, "the documented answer");
        }
    }
}
