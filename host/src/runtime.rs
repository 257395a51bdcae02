//! The app at run time: compiled components, per-request instances, Spin's request headers,
//! service chaining and the outbound HTTP policy.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, Result, anyhow};
use bytes::Bytes;
use http_body_util::BodyExt as _;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ProfilingStrategy, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::allowed_hosts::AllowedHosts;
use crate::bindings::SpinImports;
use crate::compile_cache::CompileCache;
use crate::key_value::KeyValueBackend;
use crate::manifest::Manifest;
use crate::outbound::OutboundHooks;
use crate::routes::{RouteMatch, Router};
use crate::variables::{AppVariables, VariableSources};

/// Spin's knobs for how much of a pooled linear memory / table stays resident between
/// instances (bytes; Spin's defaults are 2 MiB and 512 KiB).
pub const LINEAR_MEMORY_KEEP_RESIDENT: &str = "SPIN_WASMTIME_LINEAR_MEMORY_KEEP_RESIDENT";
pub const TABLE_KEEP_RESIDENT: &str = "SPIN_WASMTIME_TABLE_KEEP_RESIDENT";

/// A byte count from the environment, or `default` when unset. Parsed as strictly as Spin does
/// (no spaces, no units); Spin panics on a bad value, we refuse to start with its name.
fn env_bytes(name: &str, default: usize) -> Result<usize> {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .with_context(|| format!("{name} must be a number of bytes, not {value:?}")),
        Err(_) => Ok(default),
    }
}

/// Our own diagnostic knob (Spin has none): `perfmap` makes wasmtime write
/// `/tmp/perf-<pid>.map`, so `perf report` names the component's functions
/// (scripts/profile_login.sh). It changes no behaviour an app can see.
pub const PROFILER: &str = "SPIN_LOCAL_PROFILER";

fn profiler_from_env() -> Result<ProfilingStrategy> {
    match std::env::var(PROFILER).as_deref() {
        Err(_) | Ok("" | "none") => Ok(ProfilingStrategy::None),
        Ok("perfmap") => Ok(ProfilingStrategy::PerfMap),
        Ok(other) => Err(anyhow!("{PROFILER} must be `perfmap` or `none`, not {other:?}")),
    }
}

/// Everything a request needs, shared by all requests.
pub struct App {
    engine: Engine,
    router: Router,
    components: HashMap<String, Arc<LoadedComponent>>,
    key_value: KeyValueBackend,
}

/// A component ready to instantiate, with its resolved configuration.
pub struct LoadedComponent {
    pub id: String,
    pre: ProxyPre<InstanceState>,
    /// Component variables, rendered from their templates.
    pub variables: BTreeMap<String, String>,
    pub allowed_hosts: AllowedHosts,
    pub key_value_stores: Vec<String>,
    environment: Vec<(String, String)>,
}

/// The `T` of each request's `Store<T>`.
pub struct InstanceState {
    pub table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: OutboundHooks,
    pub component: Arc<LoadedComponent>,
    pub key_value: KeyValueBackend,
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for InstanceState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}

/// Options of `spin-local up` that shape the app.
pub struct AppOptions {
    pub manifest: PathBuf,
    pub sources: VariableSources,
    /// Folder for the key-value database (Spin: `.spin` beside spin.toml).
    pub state_dir: Option<PathBuf>,
    /// Wasmtime's compilation cache (`--cache`, `--disable-cache`).
    pub compile_cache: CompileCache,
}

pub type ResponseResult = Result<hyper::Response<HyperOutgoingBody>>;

impl App {
    pub fn load(options: AppOptions) -> Result<Arc<Self>> {
        let manifest = Manifest::from_file(&options.manifest)?;
        let variables = AppVariables::resolve(&manifest.variables, &options.sources)?;

        let mut config = Config::new();
        config.wasm_component_model(true);
        config.profiler(profiler_from_env()?);
        let cache = options.compile_cache.apply(&mut config)?;
        let cache_dir = cache.as_ref().map_or_else(|| "disabled".into(), |cache| cache.directory().display().to_string());
        tracing::info!(cache = %cache_dir, "compilation cache");
        // Spin pre-allocates instance slots; so do we (fresh instance per request, cheaply).
        let mut pooling = PoolingAllocationConfig::default();
        pooling
            .total_component_instances(256)
            .total_memories(256)
            .total_tables(256)
            .total_core_instances(512)
            .max_memory_size(256 << 20)
            // As Spin: the first bytes of a freed memory/table stay mapped and are zeroed in
            // place for the next instance, instead of being returned to the kernel and faulted
            // in again; the same environment variables tune it.
            .linear_memory_keep_resident(env_bytes(LINEAR_MEMORY_KEEP_RESIDENT, 2 << 20)?)
            .table_keep_resident(env_bytes(TABLE_KEEP_RESIDENT, 1 << 19)?);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
        let engine = Engine::new(&config).map_err(anyhow::Error::from).context("Failed to create the wasmtime engine")?;

        let mut linker: Linker<InstanceState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(anyhow::Error::from).context("Failed to link WASI")?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(anyhow::Error::from).context("Failed to link wasi:http")?;
        SpinImports::add_to_linker::<_, HasSelf<InstanceState>>(&mut linker, |state| state)
            .map_err(anyhow::Error::from)
            .context("Failed to link Spin interfaces")?;

        let mut components = HashMap::new();
        for (id, decl) in &manifest.components {
            let started = Instant::now();
            let hits_before = cache.as_ref().map_or(0, wasmtime::Cache::cache_hits);
            let component = Component::from_file(&engine, &decl.source)
                .map_err(anyhow::Error::from)
                .with_context(|| format!("Failed to load component `{id}` from {}", decl.source.display()))?;
            let pre = ProxyPre::new(
                linker
                    .instantiate_pre(&component)
                    .map_err(anyhow::Error::from)
                    .with_context(|| format!("Component `{id}` imports something this host does not provide"))?,
            )
            .map_err(anyhow::Error::from)
            .with_context(|| format!("Component `{id}` is not a wasi:http component"))?;
            let rendered_hosts = decl
                .allowed_outbound_hosts
                .iter()
                .map(|template| variables.render(template))
                .collect::<Result<Vec<_>>>()
                .with_context(|| format!("component `{id}`: allowed_outbound_hosts"))?;
            let allowed_hosts = AllowedHosts::parse(&rendered_hosts)
                .with_context(|| format!("component `{id}`: allowed_outbound_hosts"))?;
            let component_variables = decl
                .variables
                .iter()
                .map(|(name, template)| Ok((name.clone(), variables.render(template)?)))
                .collect::<Result<BTreeMap<_, _>>>()
                .with_context(|| format!("component `{id}`: variables"))?;
            let from_cache = cache.as_ref().is_some_and(|cache| cache.cache_hits() > hits_before);
            tracing::info!(component = %id, compile_ms = started.elapsed().as_millis() as u64, from_cache, "component ready");
            components.insert(
                id.clone(),
                Arc::new(LoadedComponent {
                    id: id.clone(),
                    pre,
                    variables: component_variables,
                    allowed_hosts,
                    key_value_stores: decl.key_value_stores.clone(),
                    environment: decl.environment.clone().into_iter().collect(),
                }),
            );
        }

        let state_dir = options.state_dir.unwrap_or_else(|| manifest.root.join(".spin"));
        let key_value = KeyValueBackend::open(&state_dir.join("sqlite_key_value.db"))?;
        let router = Router::build(&manifest.triggers)?;
        Ok(Arc::new(Self { engine, router, components, key_value }))
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn route(&self, path: &str) -> Option<RouteMatch> {
        self.router.route(path)
    }

    /// Runs one request through `route.component` on a fresh instance.
    pub async fn dispatch<B>(
        self: &Arc<Self>,
        route: RouteMatch,
        mut request: hyper::Request<B>,
        client_addr: SocketAddr,
    ) -> ResponseResult
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let component = self
            .components
            .get(&route.component)
            .cloned()
            .ok_or_else(|| anyhow!("no component `{}`", route.component))?;
        add_spin_headers(&mut request, &route, client_addr)?;

        // The component's stdout and stderr are the host's, unchanged (as in Spin): each guest
        // write is one `write_all` under std's stderr lock, so a JSON line a component writes in
        // one write (ours do, see crates/telemetry) never interleaves with another instance's
        // lines or the host's own (tracing also writes a whole line at once).
        let mut wasi = WasiCtx::builder();
        wasi.inherit_stdout().inherit_stderr().envs(&component.environment);
        let state = InstanceState {
            table: ResourceTable::new(),
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            hooks: OutboundHooks::new(self.clone(), component.clone()),
            component: component.clone(),
            key_value: self.key_value.clone(),
        };
        let mut store = Store::new(&self.engine, state);
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let incoming = store.data_mut().http().new_incoming_request(Scheme::Http, request).map_err(anyhow::Error::from)?;
        let outparam = store.data_mut().http().new_response_outparam(sender).map_err(anyhow::Error::from)?;
        let pre = component.pre.clone();
        let task = tokio::task::spawn(async move {
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, incoming, outparam)
                .await
        });
        match receiver.await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(code)) => Err(anyhow!("component `{}` answered with an error: {code:?}", component.id)),
            Err(_) => {
                let cause = match task.await {
                    Ok(Ok(())) => anyhow!("the component never set a response"),
                    Ok(Err(trap)) => anyhow::Error::from(trap),
                    Err(join) => anyhow!(join),
                };
                Err(cause.context(format!("component `{}` failed", component.id)))
            }
        }
    }

    /// Service chaining: `http://<component>.spin.internal/...`, in process, skipping the router.
    pub async fn dispatch_chained<B>(self: Arc<Self>, target: &str, request: hyper::Request<B>) -> ResponseResult
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let path = request.uri().path().to_string();
        let route = RouteMatch::chained(target, &path);
        let started = Instant::now();
        let method = request.method().clone();
        let result = Box::pin(self.dispatch(route, request, SocketAddr::from(([0, 0, 0, 0], 0)))).await;
        crate::server::log_request(target, &method, &path, &result, started, true);
        result
    }
}

/// Spin's request headers, plus its treatment of `Host` for chained requests. As Spin's
/// `prepare_request_headers`: a header value that is not UTF-8 fails the request, and the
/// `spin-*` headers are appended after the client's, so a client that sends one of them itself
/// (a forged `spin-client-addr`) is seen first, Spin's value last.
fn add_spin_headers<B>(request: &mut hyper::Request<B>, route: &RouteMatch, client_addr: SocketAddr) -> Result<()> {
    if let Some((name, _)) = request.headers().iter().find(|(_, value)| std::str::from_utf8(value.as_bytes()).is_err()) {
        anyhow::bail!("request header {name} is not UTF-8");
    }
    let headers = request.headers_mut();
    if let Some(host) = headers.get(http::header::HOST).and_then(|h| h.to_str().ok())
        && crate::allowed_hosts::service_chaining_target(host).is_some()
    {
        headers.remove(http::header::HOST);
    }
    headers.remove(http::header::CONNECTION);
    let host = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost")
        .to_string();
    let path_and_query = request.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/").to_string();
    let mut pairs = vec![
        ("spin-path-info".to_string(), route.path_info.clone()),
        ("spin-full-url".to_string(), format!("http://{host}{path_and_query}")),
        ("spin-matched-route".to_string(), route.raw_route.clone()),
        ("spin-base-path".to_string(), "/".to_string()),
        ("spin-raw-component-route".to_string(), route.raw_route.clone()),
        ("spin-component-route".to_string(), route.component_route.clone()),
        ("spin-client-addr".to_string(), client_addr.to_string()),
    ];
    for (name, value) in &route.named {
        pairs.push((format!("spin-path-match-{}", name.to_ascii_lowercase()), value.clone()));
    }
    let headers = request.headers_mut();
    for (name, value) in pairs {
        headers.append(
            http::HeaderName::try_from(name.as_str()).context("Failed to build a spin header name")?,
            http::HeaderValue::try_from(value.as_str()).context("Failed to build a spin header value")?,
        );
    }
    // wasi:http needs an authority: the URI's, else Host, else (chained requests) localhost.
    if request.uri().authority().is_none() && !request.headers().contains_key(http::header::HOST) {
        let uri = http::Uri::builder()
            .scheme("http")
            .authority("localhost")
            .path_and_query(path_and_query)
            .build()
            .context("Failed to build the request URI")?;
        *request.uri_mut() = uri;
    }
    Ok(())
}

/// A plain-text response from the host itself (404, 500), as Spin gives.
pub fn host_response(status: u16, text: &'static str) -> hyper::Response<HyperOutgoingBody> {
    let body = http_body_util::Full::new(Bytes::from_static(text.as_bytes()))
        .map_err(|never: std::convert::Infallible| -> wasmtime_wasi_http::Error { match never {} })
        .boxed_unsync();
    let mut response = hyper::Response::new(body);
    *response.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    response
}

#[cfg(test)]
mod tests {
    use super::{PROFILER, env_bytes, profiler_from_env};
    use wasmtime::ProfilingStrategy;

    #[test]
    fn keep_resident_sizes_come_from_the_environment_as_spin_reads_them() {
        // Names of this test only: the process environment is shared by every test.
        const UNSET: &str = "SPIN_LOCAL_TEST_KEEP_RESIDENT_UNSET";
        const SET: &str = "SPIN_LOCAL_TEST_KEEP_RESIDENT_SET";
        const BAD: &str = "SPIN_LOCAL_TEST_KEEP_RESIDENT_BAD";
        const SPACED: &str = "SPIN_LOCAL_TEST_KEEP_RESIDENT_SPACED";
        // SAFETY: these variables are read and written by this test only.
        unsafe {
            std::env::set_var(SET, "33554432");
            std::env::set_var(BAD, "32MiB");
            std::env::set_var(SPACED, " 33554432");
        }
        assert_eq!(env_bytes(UNSET, 2 << 20).unwrap(), 2 << 20);
        assert_eq!(env_bytes(SET, 2 << 20).unwrap(), 32 << 20);
        let err = env_bytes(BAD, 2 << 20).unwrap_err().to_string();
        assert!(err.contains(BAD) && err.contains("number of bytes"), "{err}");
        assert!(env_bytes(SPACED, 2 << 20).is_err(), "Spin does not trim either");
    }

    #[test]
    fn the_profiler_is_off_unless_asked_for_by_name() {
        // The only test that touches this variable (the process environment is shared).
        // SAFETY: read and written by this test only.
        unsafe { std::env::remove_var(PROFILER) };
        assert!(matches!(profiler_from_env().unwrap(), ProfilingStrategy::None));
        unsafe { std::env::set_var(PROFILER, "perfmap") };
        assert!(matches!(profiler_from_env().unwrap(), ProfilingStrategy::PerfMap));
        unsafe { std::env::set_var(PROFILER, "vtune") };
        let err = profiler_from_env().unwrap_err().to_string();
        unsafe { std::env::remove_var(PROFILER) };
        assert!(err.contains(PROFILER) && err.contains("perfmap"), "{err}");
    }
}
