//! HTTP routing with Spin's semantics, on the same `routefinder` crate Spin uses: exact routes,
//! `:name` segments and trailing `/...` wildcards (which also match the prefix itself); the most
//! specific route wins; private routes are left out (reachable only by chaining).

use std::collections::BTreeMap;

use anyhow::{Result, anyhow};

use crate::manifest::{HttpTrigger, Route};

#[derive(Debug, Clone)]
struct RouteHandler {
    component: String,
    /// The route as written, e.g. `/api/v3/auth/...`.
    raw_route: String,
}

pub struct Router {
    inner: routefinder::Router<RouteHandler>,
}

/// What Spin tells the component about the match (its `spin-*` headers).
#[derive(Debug, Clone, PartialEq)]
pub struct RouteMatch {
    pub component: String,
    /// `spin-matched-route` and `spin-raw-component-route`: the route as written.
    pub raw_route: String,
    /// `spin-component-route`: the route without its trailing `/...`.
    pub component_route: String,
    /// `spin-path-info`: the part of the path matched by `/...` ("" for exact routes).
    pub path_info: String,
    /// `spin-path-match-<name>` values for `:name` segments.
    pub named: BTreeMap<String, String>,
}

impl RouteMatch {
    /// The synthetic match Spin uses for a chained request: route `/...`, path info = the path.
    pub fn chained(component: &str, path: &str) -> Self {
        Self {
            component: component.to_string(),
            raw_route: "/...".into(),
            component_route: String::new(),
            path_info: path.to_string(),
            named: BTreeMap::new(),
        }
    }
}

impl Router {
    pub fn build(triggers: &[HttpTrigger]) -> Result<Self> {
        // Later duplicates replace earlier ones, as in Spin.
        let mut by_route: BTreeMap<String, (usize, &HttpTrigger)> = BTreeMap::new();
        for (index, trigger) in triggers.iter().enumerate() {
            if let Route::Pattern(pattern) = &trigger.route {
                by_route.insert(absolutize(pattern), (index, trigger));
            }
        }
        let mut ordered: Vec<_> = by_route.into_iter().collect();
        ordered.sort_by_key(|(_, (index, _))| *index);

        let mut inner = routefinder::Router::new();
        for (route, (_, trigger)) in ordered {
            let spec = match route.strip_suffix("/...") {
                Some(prefix) => format!("{prefix}/*"),
                None => route.clone(),
            };
            let spec: routefinder::RouteSpec = spec
                .as_str()
                .try_into()
                .map_err(|e| anyhow!("route {route} of component {}: {e}", trigger.component))?;
            inner
                .add(spec, RouteHandler { component: trigger.component.clone(), raw_route: route })
                .map_err(|e| anyhow!("{e}"))?;
        }
        Ok(Self { inner })
    }

    pub fn route(&self, path: &str) -> Option<RouteMatch> {
        let found = self.inner.best_match(path)?;
        let handler = found.handler();
        let captures = found.captures();
        // Spin has always kept trailing slashes in the path info; routefinder drops them.
        let path_info = match captures.wildcard() {
            None => String::new(),
            Some(rest) => match (rest.is_empty(), path.ends_with('/')) {
                (true, false) => String::new(),
                (true, true) => "/".into(),
                (false, false) => format!("/{rest}"),
                (false, true) => format!("/{rest}/"),
            },
        };
        let named = captures
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        Some(RouteMatch {
            component: handler.component.clone(),
            raw_route: handler.raw_route.clone(),
            component_route: handler
                .raw_route
                .strip_suffix("/...")
                .unwrap_or(&handler.raw_route)
                .to_string(),
            path_info,
            named,
        })
    }
}

fn absolutize(route: &str) -> String {
    let route = if route.starts_with('/') { route.to_string() } else { format!("/{route}") };
    // Spin strips one trailing slash ("/" itself becomes the empty route, which matches "/").
    match route.strip_suffix('/') {
        Some(stripped) => stripped.to_string(),
        None => route,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(routes: &[(&str, &str)]) -> Router {
        let triggers: Vec<_> = routes
            .iter()
            .map(|(route, component)| HttpTrigger {
                route: Route::Pattern(route.to_string()),
                component: component.to_string(),
            })
            .collect();
        Router::build(&triggers).expect("routes build")
    }

    fn component(router: &Router, path: &str) -> Option<String> {
        router.route(path).map(|m| m.component)
    }

    #[test]
    fn exact_beats_wildcard_and_longest_prefix_wins() {
        let r = router(&[
            ("/...", "root"),
            ("/api/...", "api"),
            ("/api/v3/auth/...", "auth"),
            ("/api/v3/auth/health", "health"),
        ]);
        assert_eq!(component(&r, "/api/v3/auth/health").as_deref(), Some("health"));
        assert_eq!(component(&r, "/api/v3/auth/login").as_deref(), Some("auth"));
        assert_eq!(component(&r, "/api/v3/auth").as_deref(), Some("auth"), "`/...` matches its prefix");
        assert_eq!(component(&r, "/api/other").as_deref(), Some("api"));
        assert_eq!(component(&r, "/elsewhere").as_deref(), Some("root"));
    }

    #[test]
    fn exact_routes_match_only_themselves() {
        let r = router(&[("/.well-known/jwks.json", "auth")]);
        assert_eq!(component(&r, "/.well-known/jwks.json").as_deref(), Some("auth"));
        assert_eq!(component(&r, "/.well-known/jwks.json/x"), None);
        assert_eq!(component(&r, "/.well-known"), None);
    }

    #[test]
    fn path_info_and_component_route_follow_spin() {
        let r = router(&[("/api/...", "api")]);
        let m = r.route("/api/users/1/").unwrap();
        assert_eq!(m.path_info, "/users/1/");
        assert_eq!(m.raw_route, "/api/...");
        assert_eq!(m.component_route, "/api");
        assert_eq!(r.route("/api").unwrap().path_info, "");
        assert_eq!(r.route("/api/").unwrap().path_info, "/");
    }

    #[test]
    fn named_segments_are_captured() {
        let r = router(&[("/users/:id", "users"), ("/users/:id/orders/...", "orders")]);
        let m = r.route("/users/42").unwrap();
        assert_eq!(m.component, "users");
        assert_eq!(m.named.get("id").map(String::as_str), Some("42"));
        assert_eq!(component(&r, "/users/42/orders/7").as_deref(), Some("orders"));
        assert_eq!(component(&r, "/users"), None);
    }

    #[test]
    fn private_routes_are_not_routable() {
        let triggers = vec![
            HttpTrigger { route: Route::Private, component: "secret".into() },
            HttpTrigger { route: Route::Pattern("/public".into()), component: "public".into() },
        ];
        let r = Router::build(&triggers).unwrap();
        assert_eq!(component(&r, "/public").as_deref(), Some("public"));
        assert_eq!(component(&r, "/secret"), None);
        assert_eq!(component(&r, "/"), None);
    }

    #[test]
    fn a_later_duplicate_route_wins() {
        let r = router(&[("/dup", "first"), ("/dup", "second")]);
        assert_eq!(component(&r, "/dup").as_deref(), Some("second"));
    }
}
