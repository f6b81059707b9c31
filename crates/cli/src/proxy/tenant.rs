//! A tenant at run time: its settings, its own rate limits, and what it did.
//!
//! A tenant's requests and tokens per minute are kept by a rate-limit store of its own (the
//! same GCRA the stack's limiter uses, one scope). A call takes one request and its token
//! estimate (the prompt and `max_tokens`) before it goes into the stack, or is refused at once
//! with the wait; when its answer ends, the estimate is replaced by the usage the provider
//! reported, and given back when nothing was used (a cached answer, a refusal).
//!
//! With `[redis]`, the tenants' limits are kept there ([`TenantStores::fleet`]): every replica
//! of the gateway holds a tenant to the same requests and tokens a minute.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tollgate::ratelimit::{
    Charges, MemoryScope, MemoryStore, QuotaTable, Quotas, RedisScope, RedisStore, Refusal,
    ScopeMatch, Store,
};
use tollgate_core::{CredentialId, Provider, Scope, Usage};

use super::config::Tenant;

/// Where a tenant's limits are kept: in this process, or in Redis for the whole fleet.
#[derive(Debug)]
enum Limits {
    Local(MemoryStore, Arc<MemoryScope>),
    Fleet(RedisStore, Arc<RedisScope>),
}

impl Limits {
    async fn reserve(&self, charges: Charges, now: Instant) -> Result<Instant, Refusal> {
        match self {
            Self::Local(store, scope) => store.reserve(scope, charges, now, Duration::ZERO).await,
            Self::Fleet(store, scope) => store.reserve(scope, charges, now, Duration::ZERO).await,
        }
    }

    fn charge(&self, charges: Charges) {
        match self {
            Self::Local(store, scope) => store.charge(scope, charges),
            Self::Fleet(store, scope) => store.charge(scope, charges),
        }
    }

    fn release(&self, charges: Charges) {
        match self {
            Self::Local(store, scope) => store.release(scope, charges),
            Self::Fleet(store, scope) => store.release(scope, charges),
        }
    }
}

/// The scope a tenant's limits are kept under: its name, never its key.
fn tenant_scope(tenant: &Tenant) -> Scope {
    Scope::new(Provider::OpenAiCompatible)
        .with_credential(Some(CredentialId::named(format!("tenant-{}", tenant.name))))
}

fn quotas(tenant: &Tenant) -> Quotas {
    Quotas {
        requests_per_minute: tenant.requests_per_minute,
        tokens_per_minute: tenant.tokens_per_minute,
        ..Quotas::unlimited()
    }
}

/// The Redis store a fleet keeps its tenants' limits in: one connection for every tenant.
#[derive(Clone, Debug)]
pub(crate) struct TenantStores(RedisStore);

impl TenantStores {
    /// The store for `tenants`' limits in the Redis at `url` (read from `[redis]`).
    pub(crate) async fn fleet(
        url: &str,
        settings: &tollgate_core::config::RedisSettings,
        tenants: &[Tenant],
    ) -> Result<Self, tollgate_core::BoxError> {
        let table = tenants.iter().filter(|t| t.limited()).fold(
            QuotaTable::new(Quotas::unlimited()),
            |table, tenant| {
                let id = CredentialId::named(format!("tenant-{}", tenant.name));
                table.with(
                    ScopeMatch::any().with_credential(id.as_str()),
                    quotas(tenant),
                )
            },
        );
        let store = RedisStore::connect(url, table)
            .await?
            .with_prefix("tollgate:tenants")
            .with_local_share(settings.local_share)
            .with_fail_open(settings.fail_open)
            .with_command_timeout(settings.command_timeout);
        Ok(Self(store))
    }
}

/// A tenant, its limits and its counts.
#[derive(Debug)]
pub(crate) struct TenantState {
    pub(crate) tenant: Tenant,
    limits: Option<Arc<Limits>>,
    /// Calls it made.
    pub(crate) requests: AtomicU64,
    /// Calls its own limits refused (requests or tokens a minute, calls in flight).
    pub(crate) limited: AtomicU64,
    /// Calls refused because it may not call the model.
    pub(crate) forbidden: AtomicU64,
}

/// A call's charge on its tenant's limits, settled when its answer ends (or released when
/// dropped unsettled).
pub(crate) struct TenantCharge {
    limits: Arc<Limits>,
    charges: Charges,
    settled: bool,
}

impl TenantState {
    /// The tenant with its limits in this process, or in `fleet`'s Redis.
    pub(crate) fn new(tenant: Tenant, fleet: Option<&TenantStores>) -> Self {
        let limits = tenant.limited().then(|| {
            let scope = tenant_scope(&tenant);
            Arc::new(match fleet {
                Some(TenantStores(store)) => {
                    let scope = store.scope(&scope, Instant::now());
                    Limits::Fleet(store.clone(), scope)
                }
                None => {
                    let store = MemoryStore::new(
                        QuotaTable::new(Quotas::unlimited())
                            .with(ScopeMatch::any(), quotas(&tenant)),
                    )
                    .with_max_scopes(1);
                    let scope = store.scope(&scope, Instant::now());
                    Limits::Local(store, scope)
                }
            })
        });
        Self {
            tenant,
            limits,
            requests: AtomicU64::new(0),
            limited: AtomicU64::new(0),
            forbidden: AtomicU64::new(0),
        }
    }

    /// Takes one request of `input` and `output` tokens (estimates) from the tenant's limits;
    /// the wait until it would fit when it does not now. `None`: the tenant has no limits.
    pub(crate) async fn admit(
        &self,
        input: u64,
        output: u64,
    ) -> Result<Option<TenantCharge>, Duration> {
        let Some(limits) = &self.limits else {
            return Ok(None);
        };
        let charges = if self.tenant.tokens_per_minute.is_some() {
            Charges::request(input, output)
        } else {
            Charges::request(0, 0)
        };
        let now = Instant::now();
        match limits.reserve(charges, now).await {
            Ok(_) => Ok(Some(TenantCharge {
                limits: limits.clone(),
                charges,
                settled: false,
            })),
            Err(refusal) => {
                self.limited.fetch_add(1, Ordering::Relaxed);
                Err(match refusal {
                    Refusal::Wait { wait, .. } => wait,
                    // A call larger than a minute's tokens: it never fits; say a minute.
                    Refusal::Never { .. } => Duration::from_secs(60),
                })
            }
        }
    }
}

impl TenantCharge {
    /// The call ended having used `usage` (`None`: nothing the provider counted): the token
    /// estimate is replaced by it.
    pub(crate) fn settle(mut self, usage: Option<Usage>) {
        self.settled = true;
        let reserved = self.charges.tokens_only();
        let used = usage.map_or(Charges::ZERO, |u| {
            Charges::request(u.input_tokens, u.output_tokens).tokens_only()
        });
        let used = if reserved.is_zero() {
            Charges::ZERO
        } else {
            used
        };
        self.limits.charge(used.saturating_sub(reserved));
        self.limits.release(reserved.saturating_sub(used));
    }
}

impl Drop for TenantCharge {
    fn drop(&mut self) {
        if !self.settled {
            self.limits.release(self.charges.tokens_only());
        }
    }
}

impl std::fmt::Debug for TenantCharge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantCharge")
            .field("charges", &self.charges)
            .finish_non_exhaustive()
    }
}

/// Every tenant's settings and counts, as `/admin/health` shows them (never a key).
pub(crate) fn tenants_json(routes: &super::routes::Routes) -> serde_json::Value {
    let tenants = routes.tenants.iter().enumerate().filter_map(|(key, t)| {
        let state = t.as_ref()?;
        let tenant = &state.tenant;
        Some(serde_json::json!({
            "name": tenant.name,
            "priority": tenant.priority.as_str(),
            "models": tenant.models,
            "requests_per_minute": tenant.requests_per_minute,
            "tokens_per_minute": tenant.tokens_per_minute,
            "max_in_flight": routes.shares.max(key),
            "in_flight": routes.shares.in_flight(key),
            "requests": state.requests.load(Ordering::Relaxed),
            "refused_by_its_limits": state.limited.load(Ordering::Relaxed),
            "refused_models": state.forbidden.load(Ordering::Relaxed),
        }))
    });
    serde_json::Value::Array(tenants.collect())
}

/// Appends each tenant's counts to the Prometheus text, labelled by its name (never its key):
/// `tollgate_tenant_requests_total`, `tollgate_tenant_refusals_total{reason}` and
/// `tollgate_tenant_in_flight`.
pub(crate) fn write_tenant_metrics(text: &mut String, routes: &super::routes::Routes) {
    use std::fmt::Write as _;
    let tenants: Vec<(usize, &TenantState)> = routes
        .tenants
        .iter()
        .enumerate()
        .filter_map(|(key, t)| Some((key, t.as_deref()?)))
        .collect();
    if tenants.is_empty() {
        return;
    }
    let _ = writeln!(
        text,
        "# HELP tollgate_tenant_requests_total Calls a tenant made through the gateway.\n\
         # TYPE tollgate_tenant_requests_total counter"
    );
    for (_, t) in &tenants {
        let _ = writeln!(
            text,
            "tollgate_tenant_requests_total{{tenant=\"{}\"}} {}",
            t.tenant.name,
            t.requests.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(
        text,
        "# HELP tollgate_tenant_refusals_total Calls of a tenant the gateway refused: over its \
         own limits, or to a model it may not call.\n\
         # TYPE tollgate_tenant_refusals_total counter"
    );
    for (_, t) in &tenants {
        for (reason, count) in [("limits", &t.limited), ("model", &t.forbidden)] {
            let _ = writeln!(
                text,
                "tollgate_tenant_refusals_total{{tenant=\"{}\",reason=\"{reason}\"}} {}",
                t.tenant.name,
                count.load(Ordering::Relaxed)
            );
        }
    }
    let _ = writeln!(
        text,
        "# HELP tollgate_tenant_in_flight A tenant's calls in flight now.\n\
         # TYPE tollgate_tenant_in_flight gauge"
    );
    for (key, t) in &tenants {
        let _ = writeln!(
            text,
            "tollgate_tenant_in_flight{{tenant=\"{}\"}} {}",
            t.tenant.name,
            routes.shares.in_flight(*key)
        );
    }
}
