//! Application variables as Spin resolves them: `--variable k=v` first, then the process
//! environment (`SPIN_VARIABLE_<NAME>`), then the `.env` file in the working directory, then the
//! manifest's `default`. Required variables without a value stop the app at startup. Component
//! variables and `allowed_outbound_hosts` are templates (`{{ name }}`) over application variables.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::manifest::{VariableDecl, validate_variable_name};

/// Where values come from, highest priority first.
#[derive(Debug, Default, Clone)]
pub struct VariableSources {
    /// `--variable name=value` on the command line.
    pub cli: BTreeMap<String, String>,
    /// `SPIN_VARIABLE_*` of the process environment, keyed by the full upper-case name.
    pub environment: BTreeMap<String, String>,
    /// `SPIN_VARIABLE_*` lines of the `.env` file, keyed like `environment`.
    pub dotenv: BTreeMap<String, String>,
}

impl VariableSources {
    /// Reads the process environment and `dotenv_path` (if it exists), as `spin up` does.
    pub fn from_process(cli: BTreeMap<String, String>, dotenv_path: &Path) -> Result<Self> {
        let environment = std::env::vars()
            .filter(|(key, _)| key.starts_with(ENV_PREFIX))
            .collect();
        let dotenv = if dotenv_path.exists() {
            dotenvy::from_path_iter(dotenv_path)
                .with_context(|| format!("Failed to read {}", dotenv_path.display()))?
                .collect::<Result<BTreeMap<_, _>, _>>()
                .with_context(|| format!("Failed to parse {}", dotenv_path.display()))?
        } else {
            BTreeMap::new()
        };
        Ok(Self { cli, environment, dotenv })
    }

    fn lookup(&self, name: &str) -> Option<&String> {
        let env_key = format!("{ENV_PREFIX}{}", name.to_ascii_uppercase());
        self.cli
            .get(name)
            .or_else(|| self.environment.get(&env_key))
            .or_else(|| self.dotenv.get(&env_key))
    }
}

const ENV_PREFIX: &str = "SPIN_VARIABLE_";

/// Resolved application variables.
#[derive(Clone)]
pub struct AppVariables {
    values: BTreeMap<String, String>,
    secret: BTreeMap<String, bool>,
}

impl std::fmt::Debug for AppVariables {
    // Values stay out of Debug output: some are secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.values.keys()).finish()
    }
}

impl AppVariables {
    pub fn resolve(decls: &BTreeMap<String, VariableDecl>, sources: &VariableSources) -> Result<Self> {
        for name in sources.cli.keys() {
            validate_variable_name(name).context("--variable")?;
        }
        let mut values = BTreeMap::new();
        let mut missing = Vec::new();
        for (name, decl) in decls {
            match sources.lookup(name).or(decl.default.as_ref()) {
                Some(value) => {
                    values.insert(name.clone(), value.clone());
                }
                None => missing.push(name.as_str()),
            }
        }
        if !missing.is_empty() {
            bail!(
                "required variables have no value: {} (set SPIN_VARIABLE_<NAME> in the environment or .env, or pass --variable name=value)",
                missing.join(", ")
            );
        }
        let secret = decls.iter().map(|(name, decl)| (name.clone(), decl.secret)).collect();
        Ok(Self { values, secret })
    }

    pub fn is_secret(&self, name: &str) -> bool {
        self.secret.get(name).copied().unwrap_or(false)
    }

    /// Expands every `{{ name }}` in `template` with application variables.
    pub fn render(&self, template: &str) -> Result<String> {
        let mut out = String::with_capacity(template.len());
        let mut rest = template;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find("}}") else {
                bail!("unterminated `{{{{` in template");
            };
            let name = after[..end].trim();
            validate_variable_name(name).context("in a template")?;
            let Some(value) = self.values.get(name) else {
                bail!("the template names `{name}`, which is not an application variable");
            };
            out.push_str(value);
            rest = &after[end + 2..];
        }
        if rest.contains("}}") {
            bail!("unmatched `}}}}` in template");
        }
        out.push_str(rest);
        Ok(out)
    }

    /// The application variables a template refers to, for secrecy checks.
    pub fn template_is_secret(&self, template: &str) -> bool {
        self.secret
            .iter()
            .any(|(name, secret)| *secret && template.contains(name.as_str()))
    }
}

/// `fermyon:spin/variables@2.0.0`: a component reads only the variables it declares.
impl crate::bindings::variables::Host for crate::runtime::InstanceState {
    async fn get(&mut self, name: String) -> wasmtime::Result<Result<String, crate::bindings::variables::Error>> {
        use crate::bindings::variables::Error;
        if validate_variable_name(&name).is_err() {
            return Ok(Err(Error::InvalidName(format!("invalid variable name {name:?}"))));
        }
        Ok(self
            .component
            .variables
            .get(&name)
            .cloned()
            .ok_or_else(|| Error::Undefined(format!("no variable for \"{}\".\"{name}\"", self.component.id))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decls() -> BTreeMap<String, VariableDecl> {
        BTreeMap::from([
            ("db_url".into(), VariableDecl { default: None, required: true, secret: true }),
            ("greeting".into(), VariableDecl { default: Some("hello".into()), required: false, secret: false }),
        ])
    }

    fn sources(cli: &[(&str, &str)], env: &[(&str, &str)], dotenv: &[(&str, &str)]) -> VariableSources {
        let map = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        VariableSources { cli: map(cli), environment: map(env), dotenv: map(dotenv) }
    }

    #[test]
    fn cli_beats_environment_beats_dotenv_beats_default() {
        let all = sources(
            &[("greeting", "cli")],
            &[("SPIN_VARIABLE_GREETING", "env"), ("SPIN_VARIABLE_DB_URL", "mysql://env")],
            &[("SPIN_VARIABLE_GREETING", "dotenv"), ("SPIN_VARIABLE_DB_URL", "mysql://dotenv")],
        );
        let vars = AppVariables::resolve(&decls(), &all).unwrap();
        assert_eq!(vars.render("{{ greeting }}").unwrap(), "cli");
        assert_eq!(vars.render("{{db_url}}").unwrap(), "mysql://env");

        let only_dotenv = sources(&[], &[], &[("SPIN_VARIABLE_DB_URL", "mysql://dotenv")]);
        let vars = AppVariables::resolve(&decls(), &only_dotenv).unwrap();
        assert_eq!(vars.render("{{ db_url }}").unwrap(), "mysql://dotenv");
        assert_eq!(vars.render("{{ greeting }}").unwrap(), "hello");
    }

    #[test]
    fn missing_required_variable_is_an_error_naming_it() {
        let err = AppVariables::resolve(&decls(), &sources(&[], &[], &[])).unwrap_err();
        assert!(err.to_string().contains("db_url"), "{err}");
    }

    #[test]
    fn templates_mix_text_and_variables() {
        let vars = AppVariables::resolve(&decls(), &sources(&[], &[("SPIN_VARIABLE_DB_URL", "x")], &[])).unwrap();
        assert_eq!(vars.render("mysql://{{ greeting }}:3306/{{db_url}}").unwrap(), "mysql://hello:3306/x");
        assert!(vars.render("{{ unknown }}").is_err());
        assert!(vars.render("{{ greeting").is_err());
        assert!(vars.render("{{ Greeting }}").is_err());
        assert!(vars.template_is_secret("{{ db_url }}"));
        assert!(!vars.template_is_secret("{{ greeting }}"));
    }

    #[test]
    fn debug_output_hides_values() {
        let vars = AppVariables::resolve(&decls(), &sources(&[], &[("SPIN_VARIABLE_DB_URL", "s3cret")], &[])).unwrap();
        assert!(!format!("{vars:?}").contains("s3cret"));
    }
}
