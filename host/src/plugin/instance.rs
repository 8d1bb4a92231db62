//! [`Plugin`]: a loaded component and its calls, each in a fresh sandboxed
//! instance.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use serde::Serialize;
use tokio::sync::watch;
use wasmtime::component::{
    ComponentExportIndex, ComponentNamedList, Instance, InstancePre, Lift, Lower, TypedFunc,
};
use wasmtime::{Store, Trap};

use super::bindings::exports::sluice::policy as ex;
use super::output::GuestLog;
use super::runtime::{ComponentInfo, PluginError, PluginRuntime, first_line};
use super::sandbox::{CallClock, HostEnv, Limits, StoreData};
use super::{WIT_PACKAGE, WIT_VERSION};
use super::{convert, imports};
use crate::policy::{
    Admission, Attempt, Bucket, CacheDecision, PolicyRequest, RetryVerdict, RouteCandidate,
    RouteChoice, SemanticCandidate, SemanticProbe, Slot, Usage,
};
use crate::state::{MAX_BUCKET_KEY_BYTES, MAX_BUCKETS};

/// Why one plugin call failed. The plugin's slot failure policy decides what
/// the request sees; the host keeps serving either way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("the plugin does not provide {0}")]
    NotProvided(Slot),
    #[error("deadline of {0:?} exceeded")]
    Deadline(Duration),
    #[error("memory limit exceeded")]
    OutOfMemory,
    #[error("trapped: {0}")]
    Trap(String),
    #[error("init rejected its config: {0}")]
    InitRejected(String),
    #[error("invalid answer: {0}")]
    BadAnswer(String),
    #[error("no instance available: {0}")]
    Unavailable(String),
}

impl CallError {
    /// A small fixed label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            CallError::Deadline(_) => "timeout",
            CallError::OutOfMemory => "oom",
            CallError::Trap(_) => "trap",
            CallError::NotProvided(_)
            | CallError::InitRejected(_)
            | CallError::BadAnswer(_)
            | CallError::Unavailable(_) => "error",
        }
    }
}

/// Call counters and a latency histogram of one loaded plugin.
#[derive(Default)]
pub struct PluginStats {
    calls: AtomicU64,
    failures: AtomicU64,
    /// Bucket i counts calls that took [2^i, 2^(i+1)) microseconds.
    latency_us: [AtomicU64; 24],
}

/// A snapshot of [`PluginStats`] for the admin API.
#[derive(Debug, Clone, Serialize)]
pub struct StatsSnapshot {
    pub calls: u64,
    pub failures: u64,
    pub p50_us: u64,
    pub p99_us: u64,
}

impl PluginStats {
    fn record(&self, took: Duration, failed: bool) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        let us = took.as_micros().max(1) as u64;
        let bucket = (63 - us.leading_zeros() as usize).min(self.latency_us.len() - 1);
        self.latency_us[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts and latency percentiles (upper bounds of power-of-two buckets).
    pub fn snapshot(&self) -> StatsSnapshot {
        let counts: Vec<u64> = self
            .latency_us
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        let quantile = |q: f64| {
            let rank = (total as f64 * q).ceil() as u64;
            let mut seen = 0;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank.max(1) {
                    return 1u64 << (i + 1);
                }
            }
            0
        };
        StatsSnapshot {
            calls: self.calls.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            p50_us: if total == 0 { 0 } else { quantile(0.5) },
            p99_us: if total == 0 { 0 } else { quantile(0.99) },
        }
    }
}

/// A linked component and its export lookups, resolved once: the plugin's
/// own, until pre-initialisation links the snapshot in its place (and the
/// original's compiled code goes once no call holds it).
struct Image {
    pre: InstancePre<StoreData>,
    exports: Exports,
    /// Whether a fresh instance must run `init` before its call.
    runs_init: bool,
}

impl Image {
    fn new(pre: InstancePre<StoreData>, kinds: &[Slot], snapshot: bool) -> wasmtime::Result<Self> {
        let find = |kind: Slot, func: &str| {
            kinds
                .contains(&kind)
                .then(|| ExportFunc::find(&pre, kind.interface(), func))
                .transpose()
        };
        let exports = Exports {
            init: ExportFunc::init(&pre).ok(),
            derive: find(Slot::CacheKey, "derive")?,
            prepare: find(Slot::Semantic, "prepare")?,
            accept: find(Slot::Semantic, "accept")?,
            admit: find(Slot::Throttle, "admit")?,
            settle: find(Slot::Throttle, "settle")?,
            decide: find(Slot::Retry, "decide")?,
            order: find(Slot::Route, "order")?,
        };
        let runs_init = !snapshot && exports.init.is_some();
        Ok(Self {
            pre,
            exports,
            runs_init,
        })
    }
}

/// The functions one linked component exports, by WIT name; `None` where
/// it does not provide the kind.
struct Exports {
    init: Option<ExportFunc>,
    derive: Option<ExportFunc>,
    prepare: Option<ExportFunc>,
    accept: Option<ExportFunc>,
    admit: Option<ExportFunc>,
    settle: Option<ExportFunc>,
    decide: Option<ExportFunc>,
    order: Option<ExportFunc>,
}

/// One function an image exports: where it is, found once when the image
/// is linked, and the signature its first call checked it against. Every
/// instance of an image has the same types, so later calls with that
/// signature skip the check (the generated `GuestIndices::load` checks
/// every function of an interface, on every call: 2-3% of a request).
pub(super) struct ExportFunc {
    index: ComponentExportIndex,
    /// `type_name` of the `(params, results)` the function was checked as.
    checked: OnceLock<&'static str>,
}

impl ExportFunc {
    /// `lifecycle.init`, which a plugin of any kind may export.
    pub(super) fn init(pre: &InstancePre<StoreData>) -> wasmtime::Result<Self> {
        Self::find(pre, "lifecycle", "init")
    }

    /// `func` of the policy interface `interface`, or why it is missing.
    fn find(pre: &InstancePre<StoreData>, interface: &str, func: &str) -> wasmtime::Result<Self> {
        let component = pre.component();
        let name = format!("{WIT_PACKAGE}/{interface}@{WIT_VERSION}");
        let instance = component
            .get_export_index(None, &name)
            .ok_or_else(|| wasmtime::format_err!("no exported instance named `{name}`"))?;
        let index = component
            .get_export_index(Some(&instance), func)
            .ok_or_else(|| wasmtime::format_err!("`{name}` does not export `{func}`"))?;
        Ok(Self {
            index,
            checked: OnceLock::new(),
        })
    }

    /// The function on `instance` (an instance of this export's image),
    /// typed as `_signature`: a generated accessor such as
    /// `ex::throttle::Guest::func_admit`, named only for its types, so that
    /// the bindings alone spell them.
    pub(super) fn typed<'a, G, P, R>(
        &self,
        store: &mut Store<StoreData>,
        instance: &Instance,
        _signature: fn(&'a G) -> TypedFunc<P, R>,
    ) -> wasmtime::Result<TypedFunc<P, R>>
    where
        P: ComponentNamedList + Lower,
        R: ComponentNamedList + Lift,
    {
        let func = instance
            .get_func(&mut *store, self.index)
            .ok_or_else(|| wasmtime::format_err!("an export is missing from its own instance"))?;
        let signature = std::any::type_name::<(P, R)>();
        if self.checked.get() == Some(&signature) {
            // SAFETY: `func` is this export on an instance of this image,
            // whose types an earlier call checked against these parameter
            // and result types (lifetimes aside, which change nothing in
            // how values are lowered or lifted).
            return Ok(unsafe { TypedFunc::new_unchecked(func) });
        }
        let typed = func.typed::<P, R>(&*store)?;
        let _ = self.checked.set(signature);
        Ok(typed)
    }
}

/// Runs one export (`$func`, its field of [`Exports`], typed as the
/// generated accessor `$signature`) on a fresh instance of `$plugin`:
/// instantiate (from the snapshot after `init`, or running `init`), call it
/// with `$params`, classify a failure, flush the guest's output; `$then`
/// turns the raw answer into the result. A macro because the call borrows
/// the store across an await.
macro_rules! on_fresh_instance {
    ($plugin:ident, $func:ident, $slot:expr, $signature:expr, $params:expr, |$out:ident| $then:block) => {{
        $plugin.provides($slot)?;
        let clock = CallClock::start($plugin.runtime.slow_lanes());
        $plugin
            .run(&clock, async {
                let mut call = $plugin.begin(&clock).await?;
                let func = export(&call.image.exports.$func, $slot)?
                    .typed(&mut call.store, &call.instance, $signature)
                    .map_err(|e| CallError::Trap(first_line(&e)))?;
                let raw = $plugin.invoke(&mut call.store, func, $params).await;
                // A closure, not an async block: nothing here awaits, and a
                // shared borrow of the store held across an await would make
                // the future !Send.
                let out = (|| {
                    let ($out,) =
                        raw.map_err(|e| classify(&call.store, &e, $plugin.limits.deadline))?;
                    $then
                })();
                $plugin.finish(&call.store, out)
            })
            .await
    }};
}

/// How a fresh instance comes to hold the plugin's parsed config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Init {
    /// The component exports no `lifecycle` interface: nothing to run.
    None,
    /// Pre-initialisation is under way (it runs after the load, so a new
    /// version serves at once); until it ends `init` runs on every instance.
    Pending,
    /// `init` ran once, after the load; every instance starts from the
    /// snapshot it left (see `plugin/preinit.rs`).
    Done,
    /// `init` runs on every fresh instance, before its call.
    EachInstance,
}

/// A loaded, initialised plugin component.
pub struct Plugin {
    runtime: PluginRuntime,
    /// What a new call instantiates: the component itself, or the
    /// snapshot `init` left once pre-initialisation has linked it.
    image: RwLock<Arc<Image>>,
    /// Whether pre-initialisation has ended, either way.
    preinit_ended: watch::Sender<bool>,
    env: Arc<HostEnv>,
    limits: Limits,
    /// Imports something that may wait on I/O (see [`imports::may_wait`]):
    /// a timer bounds its calls too, since the epoch stops only guest code.
    may_wait: bool,
    info: ComponentInfo,
    loaded_at: std::time::SystemTime,
    stats: PluginStats,
    log: GuestLog,
}

/// One fresh instance, alive for one call.
struct Call {
    store: Store<StoreData>,
    instance: Instance,
    /// What it was instantiated from.
    image: Arc<Image>,
}

impl Plugin {
    pub(crate) fn new(
        runtime: PluginRuntime,
        pre: InstancePre<StoreData>,
        info: ComponentInfo,
        env: Arc<HostEnv>,
        limits: Limits,
    ) -> wasmtime::Result<Self> {
        let image = Image::new(pre, &info.kinds, false)?;
        // Nothing to pre-initialise without `init`.
        let (preinit_ended, _) = watch::channel(image.exports.init.is_none());
        let may_wait = info.imports.iter().any(|name| imports::may_wait(name));
        let log = GuestLog::new(env.slot, &info.hash);
        Ok(Self {
            log,
            runtime,
            image: RwLock::new(Arc::new(image)),
            preinit_ended,
            env,
            limits,
            may_wait,
            info,
            loaded_at: std::time::SystemTime::now(),
            stats: PluginStats::default(),
        })
    }

    /// What the component is: hash, kinds, imports, size.
    pub fn info(&self) -> &ComponentInfo {
        &self.info
    }

    /// The kinds this plugin provides.
    pub fn kinds(&self) -> &[Slot] {
        &self.info.kinds
    }

    /// The slot it was loaded for.
    pub fn slot(&self) -> Slot {
        self.env.slot
    }

    /// When it was loaded.
    pub fn loaded_at(&self) -> std::time::SystemTime {
        self.loaded_at
    }

    /// Its call counters.
    pub fn stats(&self) -> &PluginStats {
        &self.stats
    }

    /// Whether instances start initialised or run `init` first.
    pub fn init(&self) -> Init {
        let image = self.image();
        if image.exports.init.is_none() {
            Init::None
        } else if !image.runs_init {
            Init::Done
        } else if !*self.preinit_ended.borrow() {
            Init::Pending
        } else {
            Init::EachInstance
        }
    }

    /// The image a new call instantiates.
    fn image(&self) -> Arc<Image> {
        self.image.read().clone()
    }

    /// NotProvided unless the component exports `kind`.
    fn provides(&self, kind: Slot) -> Result<(), CallError> {
        if self.info.kinds.contains(&kind) {
            Ok(())
        } else {
            Err(CallError::NotProvided(kind))
        }
    }

    /// Waits until pre-initialisation has ended, and says how it ended.
    pub async fn preinitialised(&self) -> Init {
        let mut ended = self.preinit_ended.subscribe();
        // The sender lives as long as `self`.
        let _ = ended.wait_for(|ended| *ended).await;
        self.init()
    }

    /// Ends pre-initialisation: from now on instances start from `snapshot`
    /// (when there is one), without `init`.
    pub(crate) fn end_preinit(&self, snapshot: Option<InstancePre<StoreData>>) {
        if let Some(pre) = snapshot {
            match Image::new(pre, &self.info.kinds, true) {
                Ok(image) => *self.image.write() = Arc::new(image),
                Err(e) => {
                    tracing::warn!(slot = %self.env.slot, error = %first_line(&e), "plugin snapshot unusable; init runs on every instance")
                }
            }
        }
        self.preinit_ended.send_replace(true);
    }

    /// What host imports reach on the plugin's behalf.
    pub(crate) fn env(&self) -> &Arc<HostEnv> {
        &self.env
    }

    /// Its sandbox limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Instantiates once (running `init` unless the instance starts from a
    /// snapshot of it): the load-time check that the component links,
    /// starts and accepts its config.
    pub(crate) async fn smoke_test(&self) -> Result<(), PluginError> {
        match self
            .begin(&CallClock::start(self.runtime.slow_lanes()))
            .await
        {
            Ok(call) => self
                .finish(&call.store, Ok(()))
                .map_err(|e| PluginError::InitFailed(e.to_string())),
            Err(CallError::InitRejected(msg)) => Err(PluginError::InitRejected(msg)),
            Err(e) => Err(PluginError::InitFailed(e.to_string())),
        }
    }

    /// A fresh instance with its deadline (on `clock`) and memory cap set,
    /// initialised with the plugin's config.
    async fn begin(&self, clock: &CallClock) -> Result<Call, CallError> {
        let mut store = Store::new(
            self.runtime.engine(),
            StoreData::new(self.env.clone(), &self.limits, self.runtime.ticker()),
        );
        store.limiter(|d| &mut d.memory);
        // Every tick the guest runs through goes to the callback: it pauses
        // the guest (which so never holds a worker thread for more than a
        // tick) or, at the deadline, traps.
        store.epoch_deadline_callback(clock.time_slices(self.limits.deadline));
        store.set_epoch_deadline(1);
        let image = self.image();
        let instance = match image.pre.instantiate_async(&mut store).await {
            Ok(i) => i,
            Err(e) => {
                // Pool exhaustion and instantiation traps look alike; the
                // classification below tells them apart.
                let err = match classify(&store, &e, self.limits.deadline) {
                    CallError::Trap(msg) if e.downcast_ref::<Trap>().is_none() => {
                        CallError::Unavailable(msg)
                    }
                    other => other,
                };
                return self.finish(&store, Err(err));
            }
        };
        if image.runs_init
            && let Some(init) = &image.exports.init
        {
            let init = match init.typed(&mut store, &instance, ex::lifecycle::Guest::func_init) {
                Ok(f) => f,
                Err(e) => return Err(CallError::Trap(first_line(&e))),
            };
            let config = (&*self.env.config_json,);
            match self.invoke(&mut store, init, config).await.map(|(a,)| a) {
                Ok(Ok(())) => {}
                Ok(Err(msg)) => return self.finish(&store, Err(CallError::InitRejected(msg))),
                Err(e) => {
                    let err = classify(&store, &e, self.limits.deadline);
                    return self.finish(&store, Err(err));
                }
            }
        }
        Ok(Call {
            store,
            instance,
            image,
        })
    }

    /// Calls `func` on a fiber, so the guest can yield at epoch ticks and
    /// wait in host imports.
    async fn invoke<P, R>(
        &self,
        store: &mut Store<StoreData>,
        func: TypedFunc<P, R>,
        params: P,
    ) -> wasmtime::Result<R>
    where
        P: ComponentNamedList + Lower,
        R: ComponentNamedList + Lift + 'static,
    {
        func.call_async(store, params).await
    }

    /// Bounds `work` (one call on a fresh instance, timed by `clock`), then
    /// logs and counts its outcome.
    async fn run<R>(
        &self,
        clock: &CallClock,
        work: impl std::future::Future<Output = Result<R, CallError>>,
    ) -> Result<R, CallError> {
        let started = Instant::now();
        let span = crate::telemetry::traces::start_child(
            "sluice.plugin",
            opentelemetry::trace::SpanKind::Internal,
            || {
                vec![
                    opentelemetry::KeyValue::new("sluice.plugin.slot", self.env.slot.name()),
                    opentelemetry::KeyValue::new("sluice.plugin.version", self.info.hash.clone()),
                ]
            },
        );
        let result = if self.may_wait {
            // The epoch callback stops guest code; this bounds time spent
            // suspended in host imports too.
            let budget = self.limits.deadline * 2 + Duration::from_millis(50);
            clock
                .bound(budget, work)
                .await
                .unwrap_or(Err(CallError::Deadline(self.limits.deadline)))
        } else {
            // Suspends only to pause at ticks: the epoch callback alone
            // bounds it.
            work.await
        };
        let took = started.elapsed();
        if let Some(cx) = &span {
            let error = result.as_ref().err().map(ToString::to_string);
            crate::telemetry::traces::end(cx, error.as_deref());
        }
        self.stats.record(took, result.is_err());
        if let Some(m) = &self.env.metrics {
            m.call(
                self.env.slot,
                result.as_ref().err().map_or("ok", |e| e.label()),
                took,
            );
        }
        if let Err(e) = &result {
            self.log.failed(e);
        }
        result
    }

    /// Hands the guest's output of this call to the log (or the
    /// collector); a failure's message gains the output's tail.
    fn finish<R>(
        &self,
        store: &Store<StoreData>,
        outcome: Result<R, CallError>,
    ) -> Result<R, CallError> {
        let (bytes, dropped) = store.data().output.take();
        if bytes.is_empty() && dropped == 0 {
            return outcome;
        }
        self.log
            .finish(&String::from_utf8_lossy(&bytes), dropped, outcome)
    }

    /// From now on keep what the guest prints, and why calls fail, for
    /// [`Self::take_output`] instead of logging it (`sluice plugin test`).
    pub fn collect_output(&self) {
        self.log.collect();
    }

    /// The lines collected since the last take (see [`Self::collect_output`]).
    pub fn take_output(&self) -> Vec<String> {
        self.log.take_collected()
    }

    /// Keeps an answered request among the slot's recent ones.
    fn record<R>(&self, req: &PolicyRequest, out: &Result<R, CallError>) {
        if out.is_ok() {
            self.runtime.recent().offer(self.env.slot, req);
        }
    }

    /// `cache-key.derive`.
    pub async fn derive_cache_key(&self, req: &PolicyRequest) -> Result<CacheDecision, CallError> {
        let view = req;
        let req = convert::request(req);
        let max = self.limits.max_answer_bytes;
        let out = on_fresh_instance!(
            self,
            derive,
            Slot::CacheKey,
            ex::cache_key::Guest::func_derive,
            (&req,),
            |d| {
                let d = convert::cache_decision(d);
                match &d {
                    CacheDecision::Cache { key, .. } => check_text("cache key", key, max)?,
                    CacheDecision::Bypass { reason } => check_text("bypass reason", reason, max)?,
                }
                Ok(d)
            }
        );
        self.record(view, &out);
        out
    }

    /// `semantic.prepare`.
    pub async fn semantic_prepare(
        &self,
        req: &PolicyRequest,
    ) -> Result<Option<SemanticProbe>, CallError> {
        let view = req;
        let req = convert::request(req);
        let max = self.limits.max_answer_bytes;
        let out = on_fresh_instance!(
            self,
            prepare,
            Slot::Semantic,
            ex::semantic::Guest::func_prepare,
            (&req,),
            |p| {
                let p = p.map(convert::probe);
                if let Some(p) = &p {
                    check_text("semantic text", &p.text, max)?;
                    check_text("semantic namespace", &p.namespace, max)?;
                    if !(p.threshold.is_finite() && (-1.0..=1.0).contains(&p.threshold)) {
                        return Err(CallError::BadAnswer(format!(
                            "threshold {} is not within [-1, 1]",
                            p.threshold
                        )));
                    }
                }
                Ok(p)
            }
        );
        self.record(view, &out);
        out
    }

    /// `semantic.accept`.
    pub async fn semantic_accept(
        &self,
        req: &PolicyRequest,
        candidate: &SemanticCandidate,
    ) -> Result<bool, CallError> {
        let req = convert::request(req);
        let candidate = convert::candidate(candidate);
        on_fresh_instance!(
            self,
            accept,
            Slot::Semantic,
            ex::semantic::Guest::func_accept,
            (&req, &candidate),
            |accepted| { Ok(accepted) }
        )
    }

    /// `throttle.admit`.
    pub async fn throttle_admit(&self, req: &PolicyRequest) -> Result<Admission, CallError> {
        let view = req;
        let req = convert::request(req);
        let max = self.limits.max_answer_bytes;
        let out = on_fresh_instance!(
            self,
            admit,
            Slot::Throttle,
            ex::throttle::Guest::func_admit,
            (&req,),
            |a| {
                let a = convert::admission(a).map_err(CallError::BadAnswer)?;
                match &a {
                    Admission::Charge { buckets } => check_buckets(buckets)?,
                    Admission::Reject { message, .. } => {
                        check_text("reject message", message, max)?
                    }
                }
                Ok(a)
            }
        );
        self.record(view, &out);
        out
    }

    /// `throttle.settle`.
    pub async fn throttle_settle(
        &self,
        req: &PolicyRequest,
        usage: &Usage,
    ) -> Result<Vec<Bucket>, CallError> {
        let req = convert::request(req);
        let usage = convert::usage(usage);
        on_fresh_instance!(
            self,
            settle,
            Slot::Throttle,
            ex::throttle::Guest::func_settle,
            (&req, usage),
            |b| {
                let b = convert::buckets_from_wit(b).map_err(CallError::BadAnswer)?;
                check_buckets(&b)?;
                Ok(b)
            }
        )
    }

    /// `retry.decide`.
    pub async fn retry_decide(
        &self,
        req: &PolicyRequest,
        attempt: &Attempt,
    ) -> Result<RetryVerdict, CallError> {
        let view = req;
        let req = convert::request(req);
        let attempt = convert::attempt(attempt);
        let out = on_fresh_instance!(
            self,
            decide,
            Slot::Retry,
            ex::retry::Guest::func_decide,
            (&req, &attempt),
            |v| {
                let v = convert::verdict(v);
                if let RetryVerdict::Fallback {
                    model, provider, ..
                } = &v
                {
                    check_name("fallback model", model)?;
                    if let Some(provider) = provider {
                        check_name("fallback provider", provider)?;
                    }
                }
                Ok(v)
            }
        );
        self.record(view, &out);
        out
    }
}

impl Plugin {
    /// `route.order`: the candidates to try, in order. Every choice must be
    /// one of `candidates`, named once; an answer that names anything else
    /// is refused as a whole (the slot's failure policy applies).
    pub async fn route_order(
        &self,
        req: &PolicyRequest,
        candidates: &[RouteCandidate],
    ) -> Result<Vec<RouteChoice>, CallError> {
        let view = req;
        let req = convert::request(req);
        let wit_candidates: Vec<_> = candidates.iter().map(convert::route_candidate).collect();
        let out = on_fresh_instance!(
            self,
            order,
            Slot::Route,
            ex::route::Guest::func_order,
            (&req, &wit_candidates),
            |choices| {
                let choices: Vec<RouteChoice> =
                    choices.into_iter().map(convert::route_choice).collect();
                check_choices(&choices, candidates)?;
                Ok(choices)
            }
        );
        self.record(view, &out);
        out
    }
}

/// A route answer names only candidates, each at most once.
fn check_choices(choices: &[RouteChoice], candidates: &[RouteCandidate]) -> Result<(), CallError> {
    if choices.len() > candidates.len() {
        return Err(CallError::BadAnswer(format!(
            "{} choices for {} candidates",
            choices.len(),
            candidates.len()
        )));
    }
    for (i, c) in choices.iter().enumerate() {
        check_name("route provider", &c.provider)?;
        check_name("route model", &c.model)?;
        if !candidates
            .iter()
            .any(|k| k.provider == c.provider && k.model == c.model)
        {
            return Err(CallError::BadAnswer(format!(
                "choice {i} ({} / {}) is not one of the candidates",
                c.provider, c.model
            )));
        }
        if choices[..i].contains(c) {
            return Err(CallError::BadAnswer(format!(
                "choice {i} ({} / {}) is named twice",
                c.provider, c.model
            )));
        }
    }
    Ok(())
}

/// The lookup of `kind`'s export, or NotProvided when the component lacks it.
fn export<T>(indices: &Option<T>, kind: Slot) -> Result<&T, CallError> {
    indices.as_ref().ok_or(CallError::NotProvided(kind))
}

fn check_text(what: &str, s: &str, max: usize) -> Result<(), CallError> {
    if s.len() > max {
        return Err(CallError::BadAnswer(format!(
            "{what} is {} bytes; the limit is {max}",
            s.len()
        )));
    }
    Ok(())
}

/// Longest model or provider name a plugin may hand back: names travel
/// upstream, into logs and into metric labels.
pub const MAX_NAME_BYTES: usize = 256;

/// A model or provider name: 1 to [`MAX_NAME_BYTES`] bytes, no control
/// characters.
fn check_name(what: &str, name: &str) -> Result<(), CallError> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(CallError::BadAnswer(format!(
            "{what} is {} bytes; it must be 1 to {MAX_NAME_BYTES}",
            name.len()
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(CallError::BadAnswer(format!(
            "{what} contains control characters"
        )));
    }
    Ok(())
}

fn check_buckets(buckets: &[Bucket]) -> Result<(), CallError> {
    if buckets.len() > MAX_BUCKETS {
        return Err(CallError::BadAnswer(format!(
            "{} buckets; at most {MAX_BUCKETS}",
            buckets.len()
        )));
    }
    for b in buckets {
        if b.key.is_empty() || b.key.len() > MAX_BUCKET_KEY_BYTES {
            return Err(CallError::BadAnswer(format!(
                "bucket keys must be 1 to {MAX_BUCKET_KEY_BYTES} bytes"
            )));
        }
    }
    Ok(())
}

/// Names what stopped a call: the memory cap, the deadline, or a trap.
fn classify(store: &Store<StoreData>, err: &wasmtime::Error, deadline: Duration) -> CallError {
    if store.data().memory.exceeded {
        return CallError::OutOfMemory;
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => CallError::Deadline(deadline),
        Some(trap) => CallError::Trap(trap.to_string()),
        None => CallError::Trap(first_line(err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(provider: &str, model: &str) -> RouteCandidate {
        RouteCandidate {
            provider: provider.into(),
            model: model.into(),
            kind: "openai".into(),
            health: Default::default(),
            price: None,
        }
    }

    fn choice(provider: &str, model: &str) -> RouteChoice {
        RouteChoice {
            provider: provider.into(),
            model: model.into(),
        }
    }

    #[test]
    fn a_route_answer_may_only_order_and_prune_the_candidates() {
        let candidates = [
            candidate("a", "m"),
            candidate("b", "m"),
            candidate("b", "n"),
        ];
        assert!(check_choices(&[choice("b", "n"), choice("a", "m")], &candidates).is_ok());
        assert!(check_choices(&[], &candidates).is_ok());
        let invented = check_choices(&[choice("evil", "m")], &candidates).unwrap_err();
        assert!(
            invented.to_string().contains("not one of the candidates"),
            "{invented}"
        );
        let other_model = check_choices(&[choice("a", "n")], &candidates).unwrap_err();
        assert!(
            other_model.to_string().contains("not one of"),
            "{other_model}"
        );
        let twice = check_choices(&[choice("a", "m"), choice("a", "m")], &candidates).unwrap_err();
        assert!(twice.to_string().contains("twice"), "{twice}");
        let long = "x".repeat(MAX_NAME_BYTES + 1);
        let err = check_choices(&[choice(&long, "m")], &candidates).unwrap_err();
        assert!(err.to_string().contains("1 to 256"), "{err}");
        let many = vec![choice("a", "m"); 4];
        let err = check_choices(&many, &candidates).unwrap_err();
        assert!(err.to_string().contains("4 choices for 3"), "{err}");
    }
}
