//! spin.toml (manifest version 2): the parts a Spin HTTP app uses, validated as Spin validates them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use serde::Deserialize;

/// A parsed, validated manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// Folder of spin.toml: component sources resolve against it.
    pub root: PathBuf,
    pub name: String,
    pub variables: BTreeMap<String, VariableDecl>,
    pub triggers: Vec<HttpTrigger>,
    pub components: BTreeMap<String, ComponentDecl>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VariableDecl {
    #[serde(default)]
    pub default: Option<String>,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub secret: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    /// A public route pattern, as written (`/api/...`, `/users/:id`, `/exact`).
    Pattern(String),
    /// `route = { private = true }`: reachable only by service chaining.
    Private,
}

#[derive(Debug, Clone)]
pub struct HttpTrigger {
    pub route: Route,
    pub component: String,
}

#[derive(Debug, Clone)]
pub struct ComponentDecl {
    pub source: PathBuf,
    pub allowed_outbound_hosts: Vec<String>,
    pub key_value_stores: Vec<String>,
    /// Component variable name → template (`"{{ app_var }}"`, literal text, or both).
    pub variables: BTreeMap<String, String>,
    pub environment: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    spin_manifest_version: u32,
    application: RawApplication,
    #[serde(default)]
    variables: BTreeMap<String, VariableDecl>,
    #[serde(default)]
    trigger: RawTriggers,
    #[serde(default)]
    component: BTreeMap<String, RawComponent>,
}

#[derive(Deserialize)]
struct RawApplication {
    name: String,
}

#[derive(Deserialize, Default)]
struct RawTriggers {
    #[serde(default)]
    http: Vec<RawHttpTrigger>,
}

#[derive(Deserialize)]
struct RawHttpTrigger {
    route: RawRoute,
    component: String,
    #[serde(default)]
    executor: Option<toml::Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawRoute {
    Pattern(String),
    Private {
        private: bool,
    },
}

#[derive(Deserialize)]
struct RawComponent {
    source: toml::Value,
    #[serde(default)]
    allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    key_value_stores: Vec<String>,
    #[serde(default)]
    variables: BTreeMap<String, String>,
    #[serde(default)]
    environment: BTreeMap<String, String>,
}

impl Manifest {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("Failed to read the manifest {}", path.display()))?;
        let root = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Self::parse(&text, root).with_context(|| format!("Invalid manifest {}", path.display()))
    }

    pub fn parse(text: &str, root: PathBuf) -> Result<Self> {
        let raw: RawManifest = toml::from_str(text).context("Failed to parse spin.toml")?;
        ensure!(
            raw.spin_manifest_version == 2,
            "spin_manifest_version must be 2 (this host reads manifest v2 only)"
        );
        for (name, decl) in &raw.variables {
            validate_variable_name(name)?;
            match (&decl.default, decl.required) {
                (Some(_), true) => bail!("variable `{name}`: `default` and `required = true` exclude each other"),
                (None, false) => bail!("variable `{name}` needs `default = \"...\"` or `required = true`"),
                _ => {}
            }
        }

        let mut components = BTreeMap::new();
        for (id, raw_component) in raw.component {
            validate_component_id(&id)?;
            let source = match raw_component.source {
                toml::Value::String(path) => root.join(path),
                _ => bail!("component `{id}`: only a local file path is supported as `source` by this host"),
            };
            for name in raw_component.variables.keys() {
                validate_variable_name(name)
                    .with_context(|| format!("component `{id}` variable"))?;
            }
            components.insert(
                id,
                ComponentDecl {
                    source,
                    allowed_outbound_hosts: raw_component.allowed_outbound_hosts,
                    key_value_stores: raw_component.key_value_stores,
                    variables: raw_component.variables,
                    environment: raw_component.environment,
                },
            );
        }

        let mut triggers = Vec::new();
        for trigger in raw.trigger.http {
            ensure!(
                components.contains_key(&trigger.component),
                "an HTTP trigger names the component `{}`, which is not defined",
                trigger.component
            );
            if let Some(executor) = trigger.executor {
                let kind = executor.get("type").and_then(toml::Value::as_str).unwrap_or("");
                ensure!(
                    kind == "spin" || kind == "wasi",
                    "component `{}`: executor `{kind}` is not supported (spin or wasi)",
                    trigger.component
                );
            }
            let route = match trigger.route {
                RawRoute::Pattern(pattern) => {
                    ensure!(
                        !pattern.starts_with("/.well-known/spin/"),
                        "route {pattern} is reserved by Spin (/.well-known/spin/...)"
                    );
                    Route::Pattern(pattern)
                }
                RawRoute::Private { private: true } => Route::Private,
                RawRoute::Private { private: false } => bail!(
                    "route must be a string pattern or '{{ private = true }}': `{}` has {{ private = false }}",
                    trigger.component
                ),
            };
            triggers.push(HttpTrigger { route, component: trigger.component });
        }

        Ok(Self {
            root,
            name: raw.application.name,
            variables: raw.variables,
            triggers,
            components,
        })
    }
}

/// Spin's rule: lowercase ASCII letters, digits and single underscores, starting with a letter.
pub fn validate_variable_name(name: &str) -> Result<()> {
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.contains("__")
        && !name.ends_with('_');
    ensure!(
        valid,
        "invalid variable name `{name}`: use lowercase letters, digits and single underscores, starting with a letter"
    );
    Ok(())
}

/// Spin's component ids: lowercase letters, digits and single dashes (kebab case), starting with a letter.
fn validate_component_id(id: &str) -> Result<()> {
    let valid = id.starts_with(|c: char| c.is_ascii_lowercase())
        && id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && !id.contains("--")
        && !id.ends_with('-');
    ensure!(valid, "invalid component id `{id}`");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
spin_manifest_version = 2
[application]
name = "demo"
[variables]
db_url = { required = true, secret = true }
greeting = { default = "hi" }
[[trigger.http]]
route = "/api/..."
component = "api"
[[trigger.http]]
route = { private = true }
component = "backend"
[component.api]
source = "api.wasm"
allowed_outbound_hosts = ["http://backend.spin.internal"]
[component.api.variables]
url = "{{ db_url }}"
[component.backend]
source = "backend.wasm"
"#;

    #[test]
    fn parses_routes_components_and_variables() {
        let manifest = Manifest::parse(MINIMAL, PathBuf::from("/app")).expect("valid manifest");
        assert_eq!(manifest.name, "demo");
        assert_eq!(manifest.triggers.len(), 2);
        assert_eq!(manifest.triggers[0].route, Route::Pattern("/api/...".into()));
        assert_eq!(manifest.triggers[1].route, Route::Private);
        assert_eq!(manifest.components["api"].source, PathBuf::from("/app/api.wasm"));
        assert!(manifest.variables["db_url"].secret);
        assert_eq!(manifest.components["api"].variables["url"], "{{ db_url }}");
    }

    #[test]
    fn rejects_what_spin_rejects() {
        let cases = [
            ("variable without default or required", MINIMAL.replace("{ default = \"hi\" }", "{ secret = true }")),
            ("uppercase variable", MINIMAL.replace("greeting =", "Greeting =")),
            ("double underscore", MINIMAL.replace("greeting =", "gree__ting =")),
            ("unknown component", MINIMAL.replace("component = \"backend\"", "component = \"nope\"")),
            ("private = false", MINIMAL.replace("private = true", "private = false")),
            ("reserved route", MINIMAL.replace("/api/...", "/.well-known/spin/x")),
            ("manifest v1", MINIMAL.replace("spin_manifest_version = 2", "spin_manifest_version = 1")),
        ];
        for (what, text) in cases {
            assert!(Manifest::parse(&text, PathBuf::from(".")).is_err(), "{what} must be refused");
        }
    }

    #[test]
    fn reads_this_projects_manifest() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../spin.toml");
        let manifest = Manifest::from_file(&path).expect("the project's spin.toml is valid");
        assert!(manifest.components.contains_key("auth"));
        assert!(manifest.components.contains_key("customer"));
    }
}
