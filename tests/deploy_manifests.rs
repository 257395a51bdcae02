//! Every YAML document under `deploy/` is parsed; each SpinApp is validated against our own JSON
//! Schema subset of the SpinApp CRD (`deploy/schema/spinapp.schema.json`) and against spin.toml:
//!
//! - every variable it sets is declared in spin.toml, once;
//! - every `required = true` variable is set (Spin resolves every application variable before a
//!   component's first outbound connection, so this holds for split SpinApps too);
//! - every `secret = true` variable comes from `valueFrom.secretKeyRef`, never a literal; the one
//!   exception is the literal `UNUSED_IN_THIS_SPLIT` for a variable that no component the SpinApp
//!   runs reads; a required variable's `secretKeyRef` is not `optional`;
//! - each secretKeyRef names a key of a Secret template under `deploy/`, and templates hold only
//!   placeholders;
//! - readiness and liveness probes exist and hit a route spin.toml routes to a component the
//!   SpinApp runs;
//! - `components` name spin.toml components; every `allowed_outbound_hosts` entry of a component
//!   it runs, rendered with the SpinApp's values, names no `*.spin.internal` component it does not
//!   run (Spin's own check, which it applies only to literal entries); a component reading
//!   `auth_service_url` without `auth` beside it points at a SpinApp in the same folder that runs
//!   `auth`; variables whose default is a loopback address are set;
//! - Ingress paths go to the SpinApp whose components serve them.
//!
//! The negative tests mutate the shipped manifests and check that each rule fires.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Value, json};

/// The literal a split SpinApp may give a required variable that none of its components reads.
const UNUSED: &str = "UNUSED_IN_THIS_SPLIT";
/// The only value a Secret template may hold.
const PLACEHOLDER: &str = "REPLACE_ME";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

// ---------------------------------------------------------------------------------------------
// spin.toml

#[derive(Debug, Clone)]
struct VarDecl {
    required: bool,
    secret: bool,
    default: Option<String>,
}

#[derive(Debug, Clone)]
struct ComponentDecl {
    /// Application variables its component variables and allowed_outbound_hosts reference.
    reads: BTreeSet<String>,
    allowed_outbound_hosts: Vec<String>,
}

#[derive(Debug, Clone)]
struct Trigger {
    route: String,
    component: String,
}

#[derive(Debug, Clone)]
struct SpinManifest {
    variables: BTreeMap<String, VarDecl>,
    components: BTreeMap<String, ComponentDecl>,
    triggers: Vec<Trigger>,
}

/// Names inside `{{ name }}` in a template.
fn template_vars(template: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        out.push(after[..end].trim().to_owned());
        rest = &after[end + 2..];
    }
    out
}

fn render(template: &str, values: &BTreeMap<String, String>) -> Option<String> {
    let mut out = template.to_owned();
    for name in template_vars(template) {
        let value = values.get(&name)?;
        out = out.replacen(&format!("{{{{ {name} }}}}", name = name), value, 1);
        out = out.replacen(&format!("{{{{{name}}}}}"), value, 1);
    }
    Some(out)
}

fn load_spin_manifest(text: &str) -> SpinManifest {
    let doc: toml::Table = toml::from_str(text).expect("spin.toml parses");
    let mut variables = BTreeMap::new();
    for (name, decl) in doc["variables"].as_table().expect("[variables]") {
        let decl = decl.as_table().expect("variable table");
        variables.insert(
            name.clone(),
            VarDecl {
                required: decl
                    .get("required")
                    .and_then(|v| v.as_bool())
                    .unwrap_or(false),
                secret: decl
                    .get("secret")
                    .and_then(|v| v.as_bool())
                    .unwrap_or(false),
                default: decl
                    .get("default")
                    .and_then(|v| v.as_str())
                    .map(str::to_owned),
            },
        );
    }
    let mut components = BTreeMap::new();
    for (id, comp) in doc["component"].as_table().expect("[component]") {
        let comp = comp.as_table().expect("component table");
        let hosts: Vec<String> = comp
            .get("allowed_outbound_hosts")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|h| h.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let mut reads: BTreeSet<String> = hosts.iter().flat_map(|h| template_vars(h)).collect();
        if let Some(vars) = comp.get("variables").and_then(|v| v.as_table()) {
            for value in vars.values() {
                reads.extend(template_vars(value.as_str().unwrap_or_default()));
            }
        }
        components.insert(
            id.clone(),
            ComponentDecl {
                reads,
                allowed_outbound_hosts: hosts,
            },
        );
    }
    let mut triggers = Vec::new();
    for t in doc["trigger"]["http"].as_array().expect("[[trigger.http]]") {
        // Private routes (`route = { private = true }`) are reachable by chaining only.
        if let (Some(route), Some(component)) = (
            t.get("route").and_then(|r| r.as_str()),
            t.get("component").and_then(|c| c.as_str()),
        ) {
            triggers.push(Trigger {
                route: route.to_owned(),
                component: component.to_owned(),
            });
        }
    }
    SpinManifest {
        variables,
        components,
        triggers,
    }
}

fn spin_manifest() -> SpinManifest {
    load_spin_manifest(&std::fs::read_to_string(repo_root().join("spin.toml")).unwrap())
}

fn segments_match(pattern: &[&str], path: &[&str]) -> bool {
    pattern.len() == path.len()
        && pattern
            .iter()
            .zip(path)
            .all(|(p, s)| p.starts_with(':') || p == s)
}

/// The component Spin's router sends `path` to, among triggers of `components`: an exact route
/// beats a wildcard one; among wildcards (`/prefix/...`, which also match `/prefix`) the longest
/// prefix wins.
fn route(spin: &SpinManifest, components: &BTreeSet<String>, path: &str) -> Option<String> {
    let split = |p: &str| -> Vec<String> {
        p.trim_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let path_segs = split(path);
    let path_segs: Vec<&str> = path_segs.iter().map(String::as_str).collect();
    let mut best: Option<(usize, &Trigger)> = None;
    for t in spin
        .triggers
        .iter()
        .filter(|t| components.contains(&t.component))
    {
        if let Some(prefix) = t.route.strip_suffix("/...") {
            let segs = split(prefix);
            let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
            if path_segs.len() >= segs.len()
                && segments_match(&segs, &path_segs[..segs.len()])
                && best.is_none_or(|(len, _)| segs.len() > len)
            {
                best = Some((segs.len(), t));
            }
        } else {
            let segs = split(&t.route);
            let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
            if segments_match(&segs, &path_segs) {
                return Some(t.component.clone());
            }
        }
    }
    best.map(|(_, t)| t.component.clone())
}

// ---------------------------------------------------------------------------------------------
// deploy/

#[derive(Debug, Clone)]
struct Doc {
    /// Relative to the repo root, with the document's index: `deploy/x.yaml#0`.
    origin: String,
    dir: PathBuf,
    value: Value,
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(path);
        }
    }
}

fn load_deploy_docs() -> Vec<Doc> {
    let root = repo_root();
    let mut files = Vec::new();
    yaml_files(&root.join("deploy"), &mut files);
    files.sort();
    let mut docs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let rel = file.strip_prefix(&root).unwrap().display().to_string();
        for (i, de) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let value = Value::deserialize(de)
                .unwrap_or_else(|e| panic!("{rel}: document {i} is not valid YAML: {e}"));
            if value.is_null() {
                continue; // an empty document (e.g. a trailing `---`)
            }
            docs.push(Doc {
                origin: format!("{rel}#{i}"),
                dir: file.parent().unwrap().to_path_buf(),
                value,
            });
        }
    }
    docs
}

fn kind(doc: &Doc) -> &str {
    doc.value["kind"].as_str().unwrap_or("")
}

fn name(doc: &Doc) -> &str {
    doc.value["metadata"]["name"].as_str().unwrap_or("")
}

fn namespace(doc: &Doc) -> &str {
    doc.value["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
}

fn schema_validator() -> jsonschema::Validator {
    let text =
        std::fs::read_to_string(repo_root().join("deploy/schema/spinapp.schema.json")).unwrap();
    let schema: Value = serde_json::from_str(&text).expect("the schema is JSON");
    jsonschema::validator_for(&schema).expect("the schema is a valid JSON Schema")
}

/// Components a SpinApp runs: `spec.components`, or all of spin.toml's.
fn retained(spin: &SpinManifest, app: &Doc) -> BTreeSet<String> {
    match app.value["spec"]["components"].as_array() {
        Some(list) => list
            .iter()
            .filter_map(|c| c.as_str().map(str::to_owned))
            .collect(),
        None => spin.components.keys().cloned().collect(),
    }
}

/// Every problem found in `docs`, each prefixed with the document it is in.
fn validate(spin: &SpinManifest, docs: &[Doc]) -> Vec<String> {
    let validator = schema_validator();
    let mut errors = Vec::new();

    // Secret templates: (namespace, name) → keys.
    let mut secrets: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for doc in docs.iter().filter(|d| kind(d) == "Secret") {
        let mut keys = BTreeSet::new();
        for field in ["stringData", "data"] {
            if let Some(map) = doc.value[field].as_object() {
                for (k, v) in map {
                    keys.insert(k.clone());
                    if v.as_str() != Some(PLACEHOLDER) {
                        errors.push(format!(
                            "{}: Secret {}: {field}.{k} holds a value; templates hold only {PLACEHOLDER}",
                            doc.origin,
                            name(doc)
                        ));
                    }
                }
            }
        }
        secrets.insert((namespace(doc).to_owned(), name(doc).to_owned()), keys);
    }

    let apps: Vec<&Doc> = docs.iter().filter(|d| kind(d) == "SpinApp").collect();
    for app in &apps {
        let at = format!("{}: SpinApp {}", app.origin, name(app));
        for e in validator.iter_errors(&app.value) {
            errors.push(format!("{at}: schema: {} at {}", e, e.instance_path()));
        }
        let spec = &app.value["spec"];
        let runs = retained(spin, app);
        for c in &runs {
            if !spin.components.contains_key(c) {
                errors.push(format!("{at}: component `{c}` is not in spin.toml"));
            }
        }
        let split = runs.len() < spin.components.len();
        let reads: BTreeSet<String> = runs
            .iter()
            .filter_map(|c| spin.components.get(c))
            .flat_map(|c| c.reads.iter().cloned())
            .collect();

        // Variables.
        let mut set: BTreeMap<String, &Value> = BTreeMap::new();
        for var in spec["variables"].as_array().into_iter().flatten() {
            let Some(var_name) = var["name"].as_str() else {
                continue;
            };
            if set.insert(var_name.to_owned(), var).is_some() {
                errors.push(format!("{at}: variable `{var_name}` is set twice"));
            }
            let Some(decl) = spin.variables.get(var_name) else {
                errors.push(format!(
                    "{at}: variable `{var_name}` is not declared in spin.toml"
                ));
                continue;
            };
            let literal = var.get("value").and_then(|v| v.as_str());
            let secret_ref = &var["valueFrom"]["secretKeyRef"];
            if literal == Some(UNUSED) {
                if !split {
                    errors.push(format!(
                        "{at}: variable `{var_name}` is {UNUSED}, but this SpinApp runs every component"
                    ));
                } else if reads.contains(var_name) {
                    errors.push(format!(
                        "{at}: variable `{var_name}` is {UNUSED}, but a component this SpinApp runs reads it"
                    ));
                }
                continue;
            }
            if decl.secret && !secret_ref.is_object() {
                errors.push(format!(
                    "{at}: variable `{var_name}` is secret in spin.toml and must come from valueFrom.secretKeyRef, not {}",
                    if literal.is_some() { "a literal value" } else { "another source" }
                ));
            }
            if secret_ref.is_object() {
                let key = secret_ref["key"].as_str().unwrap_or("");
                let secret_name = secret_ref["name"].as_str().unwrap_or("");
                match secrets.get(&(namespace(app).to_owned(), secret_name.to_owned())) {
                    None => errors.push(format!(
                        "{at}: variable `{var_name}` reads Secret `{secret_name}`, which no template under deploy/ defines in namespace {}",
                        namespace(app)
                    )),
                    Some(keys) if !keys.contains(key) => errors.push(format!(
                        "{at}: variable `{var_name}` reads key `{key}` of Secret `{secret_name}`, which its template does not have"
                    )),
                    Some(_) => {}
                }
                if decl.required && secret_ref["optional"].as_bool() == Some(true) {
                    errors.push(format!(
                        "{at}: variable `{var_name}` is required, but its secretKeyRef is optional"
                    ));
                }
            }
        }
        for (var_name, decl) in &spin.variables {
            if decl.required && !set.contains_key(var_name) {
                errors.push(format!(
                    "{at}: required variable `{var_name}` is not set (Spin resolves every application variable, even in a split SpinApp)"
                ));
            }
            let loopback = decl
                .default
                .as_deref()
                .is_some_and(|d| d.contains("127.0.0.1") || d.contains("localhost"));
            if loopback && reads.contains(var_name) && !set.contains_key(var_name) {
                errors.push(format!(
                    "{at}: variable `{var_name}` defaults to a loopback address, which in a pod is the pod itself: set it"
                ));
            }
        }

        // Effective literal values: the SpinApp's, else spin.toml's defaults.
        let mut values: BTreeMap<String, String> = spin
            .variables
            .iter()
            .filter_map(|(k, d)| d.default.clone().map(|v| (k.clone(), v)))
            .collect();
        for (k, var) in &set {
            if let Some(v) = var.get("value").and_then(|v| v.as_str()) {
                values.insert(k.clone(), v.to_owned());
            }
        }

        // Service chaining only reaches components deployed together.
        for c in runs
            .iter()
            .filter_map(|c| spin.components.get(c).map(|d| (c, d)))
        {
            let (id, decl) = c;
            for entry in &decl.allowed_outbound_hosts {
                let Some(rendered) = render(entry, &values) else {
                    continue;
                };
                let host = rendered
                    .split("://")
                    .nth(1)
                    .unwrap_or(&rendered)
                    .split(['/', ':'])
                    .next()
                    .unwrap_or("");
                if let Some(target) = host.strip_suffix(".spin.internal")
                    && !runs.contains(target)
                {
                    errors.push(format!(
                            "{at}: component `{id}` may call {rendered} ({entry:?} in spin.toml), but `{target}` is not deployed in this SpinApp: Spin refuses service chaining to it; point the variable at {target}'s own Service"
                        ));
                }
            }
        }
        if reads.contains("auth_service_url") && !runs.contains("auth") {
            let url = values.get("auth_service_url").cloned().unwrap_or_default();
            let host = url
                .split("://")
                .nth(1)
                .unwrap_or("")
                .split(['/', ':'])
                .next()
                .unwrap_or("");
            let labels: Vec<&str> = host.split('.').collect();
            if labels.len() == 5 && labels[2..] == ["svc", "cluster", "local"] {
                let target = apps.iter().find(|a| {
                    name(a) == labels[0] && namespace(a) == labels[1] && a.dir == app.dir
                });
                match target {
                    None => errors.push(format!(
                        "{at}: auth_service_url {url} names no SpinApp `{}` in namespace `{}` beside this one",
                        labels[0], labels[1]
                    )),
                    Some(t) if !retained(spin, t).contains("auth") => errors.push(format!(
                        "{at}: auth_service_url {url} names SpinApp `{}`, which does not run auth",
                        labels[0]
                    )),
                    Some(_) => {}
                }
            }
        }

        // Probes.
        for probe in ["readiness", "liveness"] {
            match spec["checks"][probe]["httpGet"]["path"].as_str() {
                None => errors.push(format!("{at}: no {probe} probe (spec.checks.{probe}.httpGet.path)")),
                Some(path) => match route(spin, &runs, path) {
                    None => errors.push(format!(
                        "{at}: {probe} probe {path} is not routed to any component this SpinApp runs"
                    )),
                    Some(c) if !path.ends_with("/health") => errors.push(format!(
                        "{at}: {probe} probe {path} (component {c}) is not a health route"
                    )),
                    Some(_) => {}
                },
            }
        }
    }

    // Ingress: each path goes to the SpinApp (Service of the same name) that serves it.
    for ing in docs.iter().filter(|d| kind(d) == "Ingress") {
        let at = format!("{}: Ingress {}", ing.origin, name(ing));
        for rule in ing.value["spec"]["rules"].as_array().into_iter().flatten() {
            for p in rule["http"]["paths"].as_array().into_iter().flatten() {
                let path = p["path"].as_str().unwrap_or("");
                let service = p["backend"]["service"]["name"].as_str().unwrap_or("");
                let Some(app) = apps.iter().find(|a| {
                    name(a) == service && namespace(a) == namespace(ing) && a.dir == ing.dir
                }) else {
                    errors.push(format!(
                        "{at}: path {path} goes to `{service}`, which is no SpinApp beside it"
                    ));
                    continue;
                };
                if p["backend"]["service"]["port"]["number"].as_u64() != Some(80) {
                    errors.push(format!(
                        "{at}: path {path}: the operator's Service listens on port 80"
                    ));
                }
                let all: BTreeSet<String> = spin.components.keys().cloned().collect();
                let wanted = route(spin, &all, path);
                let served = route(spin, &retained(spin, app), path);
                if wanted.is_none() || wanted != served {
                    errors.push(format!(
                        "{at}: path {path} is served by {wanted:?} in spin.toml, but goes to SpinApp `{service}`, which serves it with {served:?}"
                    ));
                }
            }
        }
    }
    errors
}

fn shipped() -> (SpinManifest, Vec<Doc>) {
    (spin_manifest(), load_deploy_docs())
}

fn find<'a>(docs: &'a mut [Doc], origin_prefix: &str) -> &'a mut Value {
    &mut docs
        .iter_mut()
        .find(|d| d.origin.starts_with(origin_prefix))
        .unwrap_or_else(|| panic!("no document {origin_prefix}"))
        .value
}

fn variable<'a>(app: &'a mut Value, var: &str) -> &'a mut Value {
    app["spec"]["variables"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|v| v["name"] == var)
        .unwrap_or_else(|| panic!("no variable {var}"))
}

fn remove_variable(app: &mut Value, var: &str) {
    app["spec"]["variables"]
        .as_array_mut()
        .unwrap()
        .retain(|v| v["name"] != var);
}

/// Validates the mutated set and asserts one of the errors contains `needle`.
fn assert_rejected(spin: &SpinManifest, docs: &[Doc], needle: &str) {
    let errors = validate(spin, docs);
    assert!(
        errors.iter().any(|e| e.contains(needle)),
        "expected an error containing {needle:?}, got {errors:#?}"
    );
}

const WHOLE: &str = "deploy/spinkube/whole/spinapp.yaml";
const SPLIT_AUTH: &str = "deploy/spinkube/split/auth.yaml";
const SPLIT_CUSTOMER: &str = "deploy/spinkube/split/customer.yaml";

// ---------------------------------------------------------------------------------------------
// The shipped manifests

#[test]
fn every_manifest_under_deploy_is_valid() {
    let (spin, docs) = shipped();
    let errors = validate(&spin, &docs);
    assert!(
        errors.is_empty(),
        "deploy/ has problems:\n{}",
        errors.join("\n")
    );

    let apps: Vec<&Doc> = docs.iter().filter(|d| kind(d) == "SpinApp").collect();
    assert!(
        apps.len() >= 3,
        "expected the whole app and a split pair, found {}",
        apps.len()
    );
    assert!(
        docs.iter().any(|d| kind(d) == "Secret"),
        "no Secret template under deploy/"
    );
    for d in &docs {
        assert!(
            matches!(kind(d), "SpinApp" | "Secret" | "Ingress"),
            "{}: unexpected kind {:?}: teach tests/deploy_manifests.rs to check it",
            d.origin,
            kind(d)
        );
    }
}

#[test]
fn the_whole_app_runs_every_component_with_chaining() {
    let (spin, mut docs) = shipped();
    let whole = find(&mut docs, WHOLE).clone();
    assert!(
        whole["spec"]["components"].is_null(),
        "the whole app runs every component"
    );
    assert_eq!(whole["spec"]["executor"], "containerd-shim-spin");
    assert!(
        whole["spec"]["replicas"].as_i64().unwrap() >= 2,
        "more than one replica"
    );
    let names: BTreeSet<&str> = whole["spec"]["variables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert!(
        !names.contains("auth_service_url"),
        "the whole app keeps chaining (the default)"
    );
    assert_eq!(
        spin.variables["auth_service_url"].default.as_deref(),
        Some("http://auth.spin.internal")
    );
}

#[test]
fn the_split_pair_covers_every_component_once() {
    let (spin, docs) = shipped();
    let split: Vec<&Doc> = docs
        .iter()
        .filter(|d| kind(d) == "SpinApp" && d.origin.starts_with("deploy/spinkube/split/"))
        .collect();
    let mut seen = Vec::new();
    for app in &split {
        let comps = app.value["spec"]["components"]
            .as_array()
            .expect("split SpinApps list components");
        seen.extend(comps.iter().map(|c| c.as_str().unwrap().to_owned()));
    }
    seen.sort();
    let all: Vec<String> = spin.components.keys().cloned().collect();
    assert_eq!(seen, all);
    let customer = split.iter().find(|a| name(a) == "customer").unwrap();
    let url = customer.value["spec"]["variables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "auth_service_url")
        .and_then(|v| v["value"].as_str())
        .unwrap();
    assert_eq!(url, "http://auth.auth-billing.svc.cluster.local");
}

#[test]
fn spin_toml_names_no_chaining_target_literally() {
    // Spin and the SpinKube shim refuse a split deployment whose retained component lists a
    // literal *.spin.internal host of a component that is not retained.
    let spin = spin_manifest();
    for (id, c) in &spin.components {
        for h in &c.allowed_outbound_hosts {
            assert!(
                !(h.contains(".spin.internal") && template_vars(h).is_empty()),
                "component {id}: literal chaining host {h} breaks split deployments; use {{{{ auth_service_url }}}}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Rules that must fire

#[test]
fn a_literal_secret_value_is_rejected() {
    let (spin, mut docs) = shipped();
    let app = find(&mut docs, WHOLE);
    *variable(app, "encryption_key") = json!({"name": "encryption_key", "value": "k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="});
    assert_rejected(
        &spin,
        &docs,
        "variable `encryption_key` is secret in spin.toml and must come from valueFrom.secretKeyRef, not a literal value",
    );
}

#[test]
fn a_secret_from_a_config_map_is_rejected() {
    let (spin, mut docs) = shipped();
    let app = find(&mut docs, WHOLE);
    *variable(app, "stripe_secret_key") = json!({"name": "stripe_secret_key", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "stripe"}}});
    assert_rejected(
        &spin,
        &docs,
        "variable `stripe_secret_key` is secret in spin.toml and must come from valueFrom.secretKeyRef, not another source",
    );
}

#[test]
fn a_missing_required_variable_is_rejected() {
    let (spin, mut docs) = shipped();
    remove_variable(find(&mut docs, WHOLE), "token_signing_keys");
    assert_rejected(
        &spin,
        &docs,
        "required variable `token_signing_keys` is not set",
    );
}

#[test]
fn a_split_app_must_still_set_the_other_components_required_variables() {
    let (spin, mut docs) = shipped();
    remove_variable(find(&mut docs, SPLIT_AUTH), "stripe_secret_key");
    assert_rejected(
        &spin,
        &docs,
        "SpinApp auth: required variable `stripe_secret_key` is not set",
    );
}

#[test]
fn the_unused_marker_is_refused_where_a_component_reads_the_variable() {
    let (spin, mut docs) = shipped();
    let app = find(&mut docs, SPLIT_AUTH);
    *variable(app, "encryption_key") = json!({"name": "encryption_key", "value": UNUSED});
    assert_rejected(
        &spin,
        &docs,
        "variable `encryption_key` is UNUSED_IN_THIS_SPLIT, but a component this SpinApp runs reads it",
    );

    let (spin, mut docs) = shipped();
    let app = find(&mut docs, WHOLE);
    *variable(app, "stripe_secret_key") = json!({"name": "stripe_secret_key", "value": UNUSED});
    assert_rejected(&spin, &docs, "but this SpinApp runs every component");
}

#[test]
fn an_unknown_variable_is_rejected() {
    let (spin, mut docs) = shipped();
    let app = find(&mut docs, WHOLE);
    app["spec"]["variables"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "stripe_api_key", "value": "x"}));
    assert_rejected(
        &spin,
        &docs,
        "variable `stripe_api_key` is not declared in spin.toml",
    );
}

#[test]
fn a_secret_ref_to_a_missing_key_or_an_optional_required_secret_is_rejected() {
    let (spin, mut docs) = shipped();
    let app = find(&mut docs, WHOLE);
    variable(app, "auth_db_url")["valueFrom"]["secretKeyRef"]["key"] = json!("auth-db-url");
    assert_rejected(
        &spin,
        &docs,
        "reads key `auth-db-url` of Secret `auth-secrets`, which its template does not have",
    );

    let (spin, mut docs) = shipped();
    let app = find(&mut docs, WHOLE);
    variable(app, "auth_db_url")["valueFrom"]["secretKeyRef"]["optional"] = json!(true);
    assert_rejected(
        &spin,
        &docs,
        "variable `auth_db_url` is required, but its secretKeyRef is optional",
    );
}

#[test]
fn a_secret_template_with_a_real_value_is_rejected() {
    let (spin, mut docs) = shipped();
    let secret = find(&mut docs, "deploy/spinkube/secrets.template.yaml#1");
    secret["stringData"]["stripe_secret_key"] = json!("sk_live_51Habc");
    assert_rejected(&spin, &docs, "stringData.stripe_secret_key holds a value");
}

#[test]
fn a_probe_on_an_unrouted_path_or_a_missing_probe_is_rejected() {
    let (spin, mut docs) = shipped();
    find(&mut docs, WHOLE)["spec"]["checks"]["readiness"]["httpGet"]["path"] = json!("/healthz");
    assert_rejected(
        &spin,
        &docs,
        "readiness probe /healthz is not routed to any component",
    );

    // Routed in spin.toml, but to the component the split SpinApp does not run.
    let (spin, mut docs) = shipped();
    find(&mut docs, SPLIT_CUSTOMER)["spec"]["checks"]["liveness"]["httpGet"]["path"] =
        json!("/api/v3/auth/health");
    assert_rejected(
        &spin,
        &docs,
        "SpinApp customer: liveness probe /api/v3/auth/health is not routed",
    );

    let (spin, mut docs) = shipped();
    find(&mut docs, WHOLE)["spec"]["checks"]
        .as_object_mut()
        .unwrap()
        .remove("liveness");
    assert_rejected(&spin, &docs, "no liveness probe");
}

#[test]
fn an_unknown_component_is_rejected() {
    let (spin, mut docs) = shipped();
    find(&mut docs, SPLIT_CUSTOMER)["spec"]["components"] = json!(["billing"]);
    assert_rejected(&spin, &docs, "component `billing` is not in spin.toml");
}

#[test]
fn a_split_customer_still_chaining_to_auth_is_rejected() {
    // Explicitly pointed at the chaining host...
    let (spin, mut docs) = shipped();
    let app = find(&mut docs, SPLIT_CUSTOMER);
    variable(app, "auth_service_url")["value"] = json!("http://auth.spin.internal");
    assert_rejected(
        &spin,
        &docs,
        "`auth` is not deployed in this SpinApp: Spin refuses service chaining",
    );

    // ...or left at the default, which is the chaining host.
    let (spin, mut docs) = shipped();
    remove_variable(find(&mut docs, SPLIT_CUSTOMER), "auth_service_url");
    assert_rejected(&spin, &docs, "may call http://auth.spin.internal");

    // A Service that is not auth's.
    let (spin, mut docs) = shipped();
    let app = find(&mut docs, SPLIT_CUSTOMER);
    variable(app, "auth_service_url")["value"] =
        json!("http://customer.auth-billing.svc.cluster.local");
    assert_rejected(
        &spin,
        &docs,
        "names SpinApp `customer`, which does not run auth",
    );

    let (spin, mut docs) = shipped();
    let app = find(&mut docs, SPLIT_CUSTOMER);
    variable(app, "auth_service_url")["value"] =
        json!("http://auth.other-namespace.svc.cluster.local");
    assert_rejected(
        &spin,
        &docs,
        "names no SpinApp `auth` in namespace `other-namespace`",
    );
}

#[test]
fn a_literal_chaining_host_in_spin_toml_is_caught_for_split_apps() {
    let (mut spin, docs) = shipped();
    spin.components
        .get_mut("customer")
        .unwrap()
        .allowed_outbound_hosts
        .push("http://auth.spin.internal".into());
    assert_rejected(
        &spin,
        &docs,
        "SpinApp customer: component `customer` may call http://auth.spin.internal",
    );
    // The whole app deploys auth beside customer: fine there.
    let whole_errors: Vec<String> = validate(&spin, &docs)
        .into_iter()
        .filter(|e| e.starts_with(WHOLE))
        .collect();
    assert!(whole_errors.is_empty(), "{whole_errors:#?}");
}

#[test]
fn a_loopback_database_address_is_rejected() {
    let (spin, mut docs) = shipped();
    remove_variable(find(&mut docs, SPLIT_AUTH), "auth_db_address");
    assert_rejected(
        &spin,
        &docs,
        "variable `auth_db_address` defaults to a loopback address",
    );
}

#[test]
fn schema_violations_are_rejected() {
    type Mutation = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Mutation, &str)> = vec![
        (
            "replicas 0",
            Box::new(|a| a["spec"]["replicas"] = json!(0)),
            "/spec/replicas",
        ),
        (
            "no image",
            Box::new(|a| {
                a["spec"].as_object_mut().unwrap().remove("image");
            }),
            "\"image\" is a required property",
        ),
        (
            "untagged image",
            Box::new(|a| a["spec"]["image"] = json!("ghcr.io/your-org/auth-billing")),
            "/spec/image",
        ),
        (
            "typo in valueFrom",
            Box::new(|a| {
                let v = variable(a, "auth_db_url");
                v["valueFrom"] =
                    json!({"secretKeyRefs": {"name": "auth-secrets", "key": "auth_db_url"}});
            }),
            "/spec/variables/0/valueFrom",
        ),
        (
            "value and valueFrom",
            Box::new(|a| variable(a, "auth_db_url")["value"] = json!("x")),
            "/spec/variables/0",
        ),
        (
            "Kubernetes probe field name",
            Box::new(|a| a["spec"]["readinessProbe"] = json!({})),
            "readinessProbe",
        ),
        (
            "bad variable name",
            Box::new(|a| {
                a["spec"]["variables"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"name": "AUTH_DB_URL", "value": "x"}))
            }),
            "/spec/variables/",
        ),
        (
            "bad quantity",
            Box::new(|a| a["spec"]["resources"]["limits"]["memory"] = json!("512 MB")),
            "/spec/resources/limits/memory",
        ),
        (
            "replicas with autoscaling",
            Box::new(|a| a["spec"]["enableAutoscaling"] = json!(true)),
            "/spec",
        ),
        (
            "wrong apiVersion",
            Box::new(|a| a["apiVersion"] = json!("core.spinoperator.dev/v1alpha1")),
            "/apiVersion",
        ),
    ];
    for (what, mutate, needle) in cases {
        let (spin, mut docs) = shipped();
        mutate(find(&mut docs, WHOLE));
        let errors = validate(&spin, &docs);
        assert!(
            errors
                .iter()
                .any(|e| e.contains("schema:") && e.contains(needle)),
            "{what}: expected a schema error mentioning {needle:?}, got {errors:#?}"
        );
    }
}

#[test]
fn an_ingress_path_to_the_wrong_split_app_is_rejected() {
    let (spin, mut docs) = shipped();
    let ing = find(&mut docs, "deploy/spinkube/split/ingress.yaml");
    ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] = json!("customer");
    assert_rejected(
        &spin,
        &docs,
        "path /api/v3/auth is served by Some(\"auth\") in spin.toml, but goes to SpinApp `customer`",
    );
}

#[test]
fn routing_follows_spin() {
    let spin = spin_manifest();
    let all: BTreeSet<String> = spin.components.keys().cloned().collect();
    assert_eq!(
        route(&spin, &all, "/api/v3/auth/health").as_deref(),
        Some("auth")
    );
    assert_eq!(route(&spin, &all, "/api/v3/auth").as_deref(), Some("auth"));
    assert_eq!(
        route(&spin, &all, "/api/v3/customers/health").as_deref(),
        Some("customer")
    );
    assert_eq!(
        route(&spin, &all, "/api/v3/billing/stripe/webhook").as_deref(),
        Some("customer")
    );
    assert_eq!(
        route(&spin, &all, "/.well-known/jwks.json").as_deref(),
        Some("auth")
    );
    assert_eq!(route(&spin, &all, "/.well-known/jwks.json/x"), None);
    assert_eq!(route(&spin, &all, "/api/v3/authx"), None);
    assert_eq!(route(&spin, &all, "/"), None);
}

// ---------------------------------------------------------------------------------------------
// Fermyon Cloud: no templates in allowed_outbound_hosts, no service chaining

/// `a/b/../c` → `a/c`, lexically.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

fn render_cloud_manifest(env: &[(&str, &str)], out: &Path) -> std::process::Output {
    let mut cmd = std::process::Command::new("bash");
    cmd.arg(repo_root().join("deploy/fermyon-cloud/render-manifest.sh"))
        .arg(repo_root().join("spin.toml"))
        .arg(out);
    for var in [
        "AUTH_DB_ADDRESS",
        "CUSTOMER_DB_ADDRESS",
        "AUTH_SERVICE_URL",
        "STRIPE_API_BASE",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("bash runs")
}

#[test]
fn the_fermyon_cloud_manifest_has_literal_hosts_and_nothing_else_changed() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("cloud");
    std::fs::create_dir(&sub).unwrap();
    let out = sub.join("spin.toml");
    let run = render_cloud_manifest(
        &[
            ("AUTH_DB_ADDRESS", "auth-db.example.com:3306"),
            ("CUSTOMER_DB_ADDRESS", "customer-db.example.com:3306"),
            (
                "AUTH_SERVICE_URL",
                "https://auth-billing-abc123.fermyon.app",
            ),
        ],
        &out,
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let text = std::fs::read_to_string(&out).unwrap();
    let rendered: toml::Table = toml::from_str(&text).expect("the rendered manifest is TOML");
    let original: toml::Table =
        toml::from_str(&std::fs::read_to_string(repo_root().join("spin.toml")).unwrap()).unwrap();

    assert_eq!(rendered["variables"], original["variables"]);
    assert_eq!(rendered["trigger"], original["trigger"]);
    assert_eq!(rendered["application"], original["application"]);
    let (rc, oc) = (
        rendered["component"].as_table().unwrap(),
        original["component"].as_table().unwrap(),
    );
    assert_eq!(rc.keys().collect::<Vec<_>>(), oc.keys().collect::<Vec<_>>());
    for (id, comp) in rc {
        let orig = &oc[id];
        for (field, value) in comp.as_table().unwrap() {
            match field.as_str() {
                "allowed_outbound_hosts" => {
                    for host in value.as_array().unwrap() {
                        let host = host.as_str().unwrap();
                        assert!(
                            !host.contains("{{"),
                            "component {id}: template left in {host}"
                        );
                        assert!(
                            !host.contains(".spin.internal"),
                            "component {id}: no chaining on Fermyon Cloud: {host}"
                        );
                    }
                    assert_eq!(
                        value.as_array().unwrap().len(),
                        orig[field].as_array().unwrap().len()
                    );
                }
                "source" => {
                    // Relative to the rendered manifest's folder, it names the same file.
                    let rel = value.as_str().unwrap();
                    let resolved = normalize(&sub.join(rel));
                    assert_eq!(
                        resolved,
                        normalize(&repo_root().join(orig[field].as_str().unwrap())),
                        "component {id}: source {rel} does not point at the original"
                    );
                }
                _ => assert_eq!(value, &orig[field], "component {id}: {field} changed"),
            }
        }
    }
    let customer_hosts: Vec<&str> = rc["customer"]["allowed_outbound_hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap())
        .collect();
    assert_eq!(
        customer_hosts,
        vec![
            "mysql://customer-db.example.com:3306",
            "https://api.stripe.com",
            "https://auth-billing-abc123.fermyon.app"
        ]
    );
    assert_eq!(
        rc["auth"]["allowed_outbound_hosts"].as_array().unwrap()[0].as_str(),
        Some("mysql://auth-db.example.com:3306")
    );
}

#[test]
fn the_fermyon_cloud_renderer_refuses_chaining_and_unsafe_values() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("spin.toml");
    let base = [
        ("AUTH_DB_ADDRESS", "db.example.com:3306"),
        ("CUSTOMER_DB_ADDRESS", "db.example.com:3306"),
    ];
    for (url, needle) in [
        ("http://auth.spin.internal", "no service chaining"),
        ("auth.example.com", "must start with https://"),
        (
            "https://a.example.com/&x",
            "contains a space, quote, backslash or &",
        ),
    ] {
        let mut env = base.to_vec();
        env.push(("AUTH_SERVICE_URL", url));
        let run = render_cloud_manifest(&env, &out);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(
            !run.status.success() && stderr.contains(needle),
            "{url}: {stderr}"
        );
    }
    let run = render_cloud_manifest(&base, &out);
    assert!(!run.status.success(), "AUTH_SERVICE_URL is required");
    assert!(!out.exists(), "nothing written on failure");
}
